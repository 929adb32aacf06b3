"""Shared pieces of the reliability suite: small generated images, a tiny model, the
exactly-once checks, a Redis server the test owns, and memory sampling of worker processes.

Every check here reads the database the real workers wrote; nothing is mocked.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import func, select, text

from qc_worker.db.models import BlurRegion, CropRoi, Image, Job, JobItem, Screening
from tests.workers import TINY, QueueEnv, job_ids, tiny_checkpoint  # noqa: F401  (re-exported to the suite)

#: The shortest redelivery Settings allows: Redis hands an unacknowledged message to
#: another worker after 60 s; every task's hard limit is at most half of that, and a
#: retry's longest wait (1.5x the back-off cap) ends before it.
QUICK_REDELIVERY = {
    "QC_VISIBILITY_TIMEOUT_S": "60",
    "QC_TASK_TIME_LIMIT_S": "30",
    "QC_RETRY_BACKOFF_MAX_S": "30",
}
#: Grid cells per screening (Settings.regions 3 x 3, always stored) and ROIs (one per aspect).
GRID_CELLS = 9
ROI_ASPECTS = 4


# --- images ------------------------------------------------------------------------------
def make_image(rng: np.random.Generator, index: int, size: tuple[int, int] | None = None) -> tuple[str, bytes]:
    """One small textured image (``size`` = (width, height), else 96-160 px a side at
    random), unique content, JPEG or PNG."""
    w, h = size or (int(v) for v in rng.integers(96, 161, size=2))
    base = rng.integers(0, 256, size=(max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img.astype(np.int16) + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)
    for _ in range(3):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.circle(img, (x, y), int(rng.integers(6, 30)), colour, -1)
    if index % 2:
        ok, buf = cv2.imencode(".png", img)
        suffix = "png"
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        suffix = "jpg"
    assert ok
    return f"img-{index:06d}.{suffix}", buf.tobytes()


def upload_images(
    client,
    bucket: str,
    prefix: str,
    count: int,
    *,
    seed: int = 0,
    start: int = 0,
    size: tuple[int, int] | None = None,
    threads: int = 8,
) -> list[str]:
    """Generate ``count`` images and put them under ``s3://bucket/prefix``; their URIs.
    One ``size`` for all (as a video's thumbnails have) lets the detector batch them."""
    rng = np.random.default_rng(seed)
    images = [make_image(rng, start + i, size) for i in range(count)]

    def put(item: tuple[str, bytes]) -> str:
        name, data = item
        key = f"{prefix}{name}"
        client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(put, images))


def enqueue_vendor(env: QueueEnv, vendor: str, *uris: str, **overrides: str) -> int:
    [job_id] = job_ids(env.qc("enqueue", "submission", "--vendor", vendor, *uris, **overrides).stdout)
    return job_id


# --- exactly once ------------------------------------------------------------------------
@dataclass
class Ledger:
    """What the database holds after a run, and the figures the assertions use."""

    images: int  # readable images (status ok)
    screenings: int
    max_per_image_model: int
    rescreened: int  # screenings written more than once (same row, updated_at moved on)
    items: dict[str, int]
    items_without_image: int
    grid_cells: set[int]
    rois: set[int]
    jobs: dict[int, str] = field(default_factory=dict)


def ledger(env: QueueEnv) -> Ledger:
    with env.sessions()() as s:
        per_pair = (
            select(func.count().label("n"))
            .select_from(Screening)
            .group_by(Screening.image_id, Screening.model_version_id)
            .subquery()
        )
        grid = (
            select(func.count(BlurRegion.id).label("n"))
            .select_from(Screening)
            .outerjoin(BlurRegion, (BlurRegion.screening_id == Screening.id) & (BlurRegion.kind == "grid"))
            .group_by(Screening.id)
            .subquery()
        )
        rois = (
            select(func.count(CropRoi.id).label("n"))
            .select_from(Screening)
            .outerjoin(CropRoi, CropRoi.screening_id == Screening.id)
            .group_by(Screening.id)
            .subquery()
        )
        return Ledger(
            images=s.scalar(select(func.count()).select_from(Image).where(Image.status == "ok")),
            screenings=s.scalar(select(func.count()).select_from(Screening)),
            max_per_image_model=s.scalar(select(func.coalesce(func.max(per_pair.c.n), 0))),
            rescreened=s.scalar(
                select(func.count()).select_from(Screening).where(Screening.updated_at > Screening.created_at)
            ),
            items={
                str(k): v for k, v in s.execute(select(JobItem.status, func.count()).group_by(JobItem.status)).all()
            },
            items_without_image=s.scalar(
                select(func.count())
                .select_from(JobItem)
                .where(JobItem.status == "screened", JobItem.image_id.is_(None))
            ),
            grid_cells={int(n) for n in s.scalars(select(grid.c.n).distinct())},
            rois={int(n) for n in s.scalars(select(rois.c.n).distinct())},
            jobs={j.id: str(j.status) for j in s.scalars(select(Job))},
        )


def assert_each_screened_once(env: QueueEnv, expected: int, *, failed: int = 0) -> Ledger:
    """Every one of ``expected`` images has exactly one screening (per image and model),
    whose regions and ROIs were written once (9 grid cells, 4 crops: no doubled rows), and
    every job item ended screened (or failed, ``failed`` of them) pointing at its image."""
    got = ledger(env)
    assert got.images == expected, got
    assert got.screenings == expected, got
    assert got.max_per_image_model == 1, got
    assert got.items.get("screened", 0) == expected, got
    assert got.items.get("failed", 0) == failed, got
    assert got.items.get("pending", 0) == 0, got
    assert got.items_without_image == 0, got
    assert got.grid_cells == {GRID_CELLS}, got
    assert got.rois == {ROI_ASPECTS}, got
    return got


def screened_count(env: QueueEnv) -> int:
    with env.sessions()() as s:
        return s.scalar(select(func.count()).select_from(JobItem).where(JobItem.status == "screened"))


def progress_counts(env: QueueEnv) -> tuple[int, int]:
    """(screenings written, job items recorded screened). A chunk writes each image's
    screening as it goes and records its items a batch at a time, so while the first
    runs ahead of the second a batch is half done."""
    with env.sessions()() as s:
        row = s.execute(
            text("SELECT (SELECT count(*) FROM screenings), (SELECT count(*) FROM job_items WHERE status = 'screened')")
        ).one()
        return int(row[0]), int(row[1])


def wait_mid_batch(env: QueueEnv, *, min_recorded: int, timeout: float = 120, worker=None) -> tuple[int, int]:
    """Poll until a batch is half done (screenings written ahead of the items recorded)
    after at least ``min_recorded`` items were recorded; the counts then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written, recorded = progress_counts(env)
        if recorded >= min_recorded and written > recorded:
            return written, recorded
        time.sleep(0.01)
    raise TimeoutError(f"no half-done batch seen: {progress_counts(env)}\n{worker.log()[-4000:] if worker else ''}")


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.2,
    on_timeout: Callable[[], str] = lambda: "",
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s\n{on_timeout()}")
        time.sleep(interval)


# --- processes ---------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (a prefork worker's pool processes)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples VmRSS of the pool processes of some worker main processes, with the job
    progress (0..1) at each sample, in a thread, until stopped."""

    def __init__(self, main_pids: Iterable[int], progress: Callable[[], float], interval: float = 0.5) -> None:
        self.main_pids = list(main_pids)
        self.progress = progress
        self.interval = interval
        self.samples: list[tuple[float, float, int, int]] = []  # (t, progress, pid, rss kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        # One sample at the end itself: the last periodic one can be up to an interval old,
        # which on a fast machine is short of 100 % progress by more than a percent.
        self._sample()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        try:
            p = self.progress()
        except Exception:  # a progress query failing must not end the sampling
            p = float("nan")
        now = time.monotonic() - self.t0
        for main in self.main_pids:
            for pid in children(main):
                kb = rss_kb(pid)
                if kb is not None:
                    self.samples.append((now, p, pid, kb))

    def per_process(self) -> dict[int, list[tuple[float, float, int]]]:
        out: dict[int, list[tuple[float, float, int]]] = {}
        for t, p, pid, kb in self.samples:
            out.setdefault(pid, []).append((t, p, kb))
        return out

    def rss_at(self, pid: int, progress: float) -> int:
        """RSS (kB) of ``pid`` at the first sample at or after ``progress``."""
        rows = self.per_process()[pid]
        return next((kb for _, p, kb in rows if p >= progress), rows[-1][2])


# --- a Redis server the test owns --------------------------------------------------------
class RedisServer:
    """``redis-server`` on a free port with an append-only file fsynced on every write, so
    what it acknowledged survives a stop and a start on the same port and folder."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            except redis.ResponseError:  # "LOADING": replaying the append-only file
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """SIGTERM: Redis flushes the append-only file and exits (as `SHUTDOWN` does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=2)
