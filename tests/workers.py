"""Real `qc worker` processes for integration tests, and the environment they share.

A :class:`QueueEnv` is one isolated deployment: its own PostgreSQL database (migrated), its
own Redis key prefix, its own S3 bucket on moto's HTTP server, its own local root. Workers
are started as real subprocesses (`python -m qc_worker.cli worker`), read nothing but
their QC_ environment, and can be stopped gracefully or killed with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from qc_worker.config import Settings
from qc_worker.db.engine import make_engine, make_sessionmaker
from qc_worker.db.models import Job
from qc_worker.detector.checkpoint import save_checkpoint
from qc_worker.detector.model import BlurDetector, ModelConfig
from qc_worker.jobs import FINAL
from tests.conftest import REDIS_URL, S3_ACCESS_KEY, S3_SECRET_KEY

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120
#: A random-init U-Net small enough that screening a 128 px image costs milliseconds.
TINY = ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8))


def tiny_checkpoint(path: Path, seed: int = 0, thresholds: dict | None = None) -> Path:
    """A real checkpoint of the tiny model (random weights; the seed makes a new version),
    with pixel threshold 0.5 unless ``thresholds`` are given."""
    torch.manual_seed(seed)
    save_checkpoint(path, BlurDetector(TINY).eval(), thresholds=thresholds or {"pixel": 0.5})
    return path


def job_ids(output: str) -> list[int]:
    """The job ids `qc enqueue` / `qc rescan` printed."""
    match = re.search(r"job\(s\): ([\d, ]+)|job (\d+)", output)
    assert match, output
    return [int(x) for x in (match.group(1) or match.group(2)).replace(",", " ").split()]


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if " ready." in text and "detector loaded" in text:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@dataclass
class QueueEnv:
    db_url: str
    redis_prefix: str
    s3_url: str
    bucket: str
    root: Path
    redis_url: str = REDIS_URL
    extra: dict[str, str] = field(default_factory=dict)

    def env(self, **overrides: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("QC_")}
        base.update(
            {
                "QC_DATABASE_URL": self.db_url,
                "QC_REDIS_URL": self.redis_url,
                "QC_REDIS_KEY_PREFIX": self.redis_prefix,
                "QC_S3_ENDPOINT_URL": self.s3_url,
                "QC_S3_BUCKET": self.bucket,
                "QC_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
                "QC_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "QC_LOCAL_ROOT": str(self.root),
                "QC_DEVICE": "cpu",
                "QC_LOG_LEVEL": "INFO",
                "QC_BEAT_SCHEDULE_PATH": str(self.root / "beat-schedule"),
                **self.extra,
                **overrides,
            }
        )
        return base

    def settings(self, **overrides) -> Settings:
        values = {k[3:].lower(): v for k, v in self.env().items() if k.startswith("QC_")}
        return Settings(_env_file=None, **{**values, **overrides})

    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(make_engine(self.db_url))

    def qc(self, *args: str, check: bool = True, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        """Run the real `qc` command line with this deployment's environment."""
        result = subprocess.run(
            [sys.executable, "-m", "qc_worker.cli", *args],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"qc {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def start_worker(self, *args: str, name: str = "worker", **env: str) -> WorkerProcess:
        log_path = self.root / f"{name}-{time.monotonic_ns()}.log"
        out = log_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "qc_worker.cli", "worker", *args],
            cwd=self.root,
            env=self.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        return WorkerProcess(proc, log_path)

    @contextmanager
    def worker(self, *args: str, ready: bool = True, **env: str) -> Iterator[WorkerProcess]:
        w = self.start_worker(*args, **env)
        try:
            if ready:
                w.wait_ready()
            yield w
        finally:
            w.stop()

    def wait_jobs(
        self,
        job_ids: list[int],
        timeout: float = 300,
        worker: WorkerProcess | None = None,
        until: Callable[[list[Job]], bool] | None = None,
    ) -> list[Job]:
        """Poll until every job has ended (or ``until`` holds); the jobs as they are then."""
        sessions = self.sessions()
        deadline = time.monotonic() + timeout
        while True:
            with sessions() as s:
                rows = list(s.scalars(select(Job).where(Job.id.in_(job_ids)).order_by(Job.id)))
                s.expunge_all()
            if (until(rows) if until else all(j.status in FINAL for j in rows)) and len(rows) == len(job_ids):
                return rows
            if time.monotonic() > deadline:
                tail = worker.log()[-6000:] if worker else ""
                raise TimeoutError(
                    f"jobs {[(j.id, str(j.status), j.items_done, j.items_failed) for j in rows]} "
                    f"not finished after {timeout} s\n{tail}"
                )
            time.sleep(0.3)
