"""``qc worker`` and ``qc beat``: the long-running Celery processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from qc_worker.cli.common import fail, load_settings
from qc_worker.vocabulary import QueueName

QUEUES = tuple(q.value for q in QueueName)

POOLS = ("prefork", "solo", "threads")


def worker(
    queues: Annotated[str, typer.Option("--queues", "-Q", help="Queues to serve, highest priority first.")] = ",".join(
        QUEUES
    ),
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Worker processes (1 per GPU).")] = 1,
    pool: Annotated[str, typer.Option("--pool", help="prefork (default), solo or threads.")] = "prefork",
) -> None:
    """A Celery worker: loads the model once per process and serves the queues in order."""
    settings = load_settings()
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in QUEUES]
    if unknown or not wanted:
        raise fail(f"unknown queue(s) {unknown or queues!r}; choose from {', '.join(QUEUES)}")
    if pool not in POOLS:
        raise fail(f"unknown pool {pool!r}; choose {', '.join(POOLS[:-1])} or {POOLS[-1]}")
    from qc_worker import metrics
    from qc_worker.tasks import app as celery

    if settings.metrics_port is not None:
        # Before the pool forks: children then write their metrics where the parent serves them.
        metrics.prepare_multiprocess(Path(tempfile.mkdtemp(prefix="qc-metrics-")))
        metrics.start_metrics_server(settings)
    celery.worker_main(
        [
            "worker",
            f"--queues={','.join(wanted)}",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=qc-{os.getpid()}@%h",
        ]
    )


def beat() -> None:
    """Celery beat: queues the nightly rescan at QC_RESCAN_AT (UTC)."""
    settings = load_settings()
    from qc_worker.tasks import app as celery

    celery.start(["beat", f"--schedule={settings.beat_schedule_path}", f"--loglevel={settings.log_level}"])
