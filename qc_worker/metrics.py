"""Prometheus metrics of the worker: what it screened, what failed, how long each stage took,
how its tasks ended, and how deep its queues are.

The worker code calls three functions: :func:`record_outcome` for each screened or failed
image, :func:`record_task` when a task ends, and :func:`start_metrics_server` once, in the
process that serves ``/metrics`` (nothing happens when ``Settings.metrics_port`` is unset).

Celery's prefork pool runs tasks in forked children, each with its own memory, so the
worker uses prometheus_client's multiprocess mode: the parent ``qc worker`` process calls
:func:`prepare_multiprocess` with an empty folder *before* it forks (every process then
writes its samples to files there), serves ``/metrics`` itself from those files, and calls
:func:`mark_process_dead` when a child exits. Without :func:`prepare_multiprocess` (``qc
screen``, a solo pool, tests) the metrics live in this process and are served from it.

Queue depth is not counted by the workers: a collector reads it from Redis at scrape time
(LLEN of each queue's list keys, see :class:`QueueDepthCollector`).

Label values come from small fixed sets, never from free text: a failure is counted by the
kind its error carried (``Outcome.failure_kind``: :class:`~qc_worker.images.ImageError` and
:class:`~qc_worker.storage.StorageError` say what kind they are); only failures recorded
from free text alone (a job's give-up, an item a worker could not list) are mapped by
:func:`failure_kind`; unknown stage names are ignored.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from qc_worker.celery_app import QUEUES
from qc_worker.config import Settings, export_process_variable
from qc_worker.vocabulary import FailureKind, OutcomeStatus, TaskState

if TYPE_CHECKING:
    from qc_worker.values import Outcome

__all__ = [
    "FAILURE_KINDS",
    "MULTIPROC_VARIABLE",
    "QUEUES",
    "STAGES",
    "TASK_STATES",
    "QueueDepthCollector",
    "build_registry",
    "failure_kind",
    "mark_process_dead",
    "prepare_multiprocess",
    "queue_keys",
    "record_outcome",
    "record_task",
    "start_metrics_server",
    "stop_metrics_server",
]

log = logging.getLogger(__name__)

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: Stages of one image, as named in ``Outcome.timings``.
STAGES: tuple[str, ...] = ("decode", "detect", "analyse", "overlay", "store")
TASK_STATES: tuple[str, ...] = tuple(TaskState)
FAILURE_KINDS: tuple[str, ...] = tuple(FailureKind)

# 1 ms .. 60 s; one image's stages fall well inside it.
STAGE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Tasks handle a chunk of images or a whole video: up to the task time limit (30 min default).
TASK_BUCKETS = (*STAGE_BUCKETS[2:], 120.0, 300.0, 600.0, 1800.0)

# Every metric is labelled, so no sample value exists until .labels() is first called:
# prepare_multiprocess() can still switch the value class after this module is imported.
IMAGES_SCREENED = Counter("qc_images_screened", "Images screened, by verdict.", ["verdict"])
IMAGE_FAILURES = Counter("qc_image_failures", "Images that could not be screened, by kind of reason.", ["kind"])
STAGE_SECONDS = Histogram(
    "qc_stage_seconds",
    "Seconds one image spent in each screening stage.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
TASKS = Counter("qc_tasks", "Celery tasks that ended, by task name and state.", ["task", "state"])
TASK_SECONDS = Histogram(
    "qc_task_seconds", "Seconds one Celery task ran, by task name.", ["task"], buckets=TASK_BUCKETS
)


# --- recording ---------------------------------------------------------------------------

# Checked in order; the first match wins. Paths and URIs are removed from the reason first,
# so a file name such as video_database.png cannot decide the kind.
_KIND_RULES: tuple[tuple[FailureKind, re.Pattern[str]], ...] = (
    (
        FailureKind.TOO_LARGE,
        re.compile(r"over the limit|more than the limit|decompression bomb|too (large|big)"),
    ),
    (FailureKind.VIDEO, re.compile(r"\bvideo\b|ffmpeg|\bcodec\b|no frames")),
    (
        FailureKind.MISSING,
        re.compile(r"no such (file|key|bucket)|nosuch(key|bucket)|not found|does not exist|\b404\b"),
    ),
    (
        FailureKind.DECODE,
        re.compile(
            r"decode|not an image|unrecognised file format|image header|no pixels|file is empty|"
            r"truncated|corrupt"
        ),
    ),
    (
        FailureKind.DATABASE,
        re.compile(r"database|sqlalchemy|psycopg|sqlite|postgres|operationalerror|integrityerror"),
    ),
    (
        FailureKind.STORAGE,
        re.compile(
            r"\bs3\b|bucket|storage|cannot read|cannot write|credentials|access ?denied|forbidden|"
            r"object key|outside the configured|endpoint|timed? ?out|connection"
        ),
    ),
)
_PATHS = re.compile(r"\w+://\S*|\S*[/\\]\S*")


def failure_kind(reason: str | None) -> FailureKind:
    """The kind of a free-text failure reason (:data:`FAILURE_KINDS`).

    >>> failure_kind("image is 20000x20000 = 400,000,000 pixels, over the limit of 100,000,000").value
    'too_large'
    >>> failure_kind("no such file or folder: /data/a.jpg").value
    'missing'
    """
    text = _PATHS.sub(" ", (reason or "").lower())
    for kind, pattern in _KIND_RULES:
        if pattern.search(text):
            return kind
    return FailureKind.OTHER


def record_outcome(outcome: Outcome) -> None:
    """Count one image's outcome and observe the seconds of each stage it went through."""
    if outcome.status == OutcomeStatus.SCREENED:
        IMAGES_SCREENED.labels(verdict=outcome.verdict or "unknown").inc()
    else:
        kind = outcome.failure_kind or failure_kind(outcome.reason)
        IMAGE_FAILURES.labels(kind=kind).inc()
    for stage, seconds in (outcome.timings or {}).items():
        if stage in STAGES and seconds is not None and seconds >= 0:
            STAGE_SECONDS.labels(stage=stage).observe(seconds)


def record_task(name: str, state: str, seconds: float | None) -> None:
    """Count one task that ended (``state``: succeeded, retried or failed) and its run time.

    ``name`` is the registered task name (a fixed set); ``seconds`` may be None when the
    start time is unknown.
    """
    if state not in TASK_STATES:
        raise ValueError(f"task state must be one of {', '.join(TASK_STATES)}, got {state!r}")
    TASKS.labels(task=name, state=state).inc()
    if seconds is not None and seconds >= 0:
        TASK_SECONDS.labels(task=name).observe(seconds)


# --- queue depth ---------------------------------------------------------------------------

# kombu's Redis transport (kombu/transport/redis.py): the queue Q lives in the list key
# global_keyprefix + Q, and a message with priority p > 0 in global_keyprefix + Q + sep + p,
# sep = '\x06\x16' (Channel._q_for_pri); priority_steps default to [0, 3, 6, 9] and may be
# configured as any of 0..9, so every possible sub-queue is counted (LLEN of a missing key
# is 0).
_PRIORITY_SEP = "\x06\x16"
_PRIORITIES = range(1, 10)


def queue_keys(queue: str, prefix: str = "") -> list[str]:
    """The Redis list keys that hold the messages of ``queue``, its priority sub-queues included."""
    return [prefix + queue] + [f"{prefix}{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITIES]


class QueueDepthCollector(Collector):
    """``qc_queue_depth{queue}``: messages waiting in each queue, read from Redis per scrape.

    Also ``qc_queue_depth_up``: 1 when Redis answered, 0 when it did not (then no depths are
    reported, rather than a misleading zero).
    """

    def __init__(
        self,
        redis_url: str,
        prefix: str = "",
        queues: Iterable[str] = QUEUES,
        timeout_s: float = 2.0,
    ) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.queues = tuple(queues)
        self.timeout_s = timeout_s
        self._client = None
        self._lock = threading.Lock()

    def _redis(self):
        with self._lock:
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(
                    self.redis_url,
                    socket_timeout=self.timeout_s,
                    socket_connect_timeout=self.timeout_s,
                )
            return self._client

    def depths(self) -> dict[str, int]:
        """Messages waiting per queue (raises the Redis client's error when it is unreachable)."""
        keys = {q: queue_keys(q, self.prefix) for q in self.queues}
        with self._redis().pipeline(transaction=False) as pipe:
            for q in self.queues:
                for key in keys[q]:
                    pipe.llen(key)
            sizes = iter(pipe.execute())
        return {q: sum(int(next(sizes)) for _ in keys[q]) for q in self.queues}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only; no Redis round trip when the collector is registered.
        yield GaugeMetricFamily("qc_queue_depth", "Messages waiting in each queue.", labels=["queue"])
        yield GaugeMetricFamily("qc_queue_depth_up", "1 when Redis answered the queue-depth scrape.")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("qc_queue_depth_up", "1 when Redis answered the queue-depth scrape.")
        try:
            depths = self.depths()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis did
            log.warning("queue depth: Redis did not answer: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        gauge = GaugeMetricFamily("qc_queue_depth", "Messages waiting in each queue.", labels=["queue"])
        for queue, depth in depths.items():
            gauge.add_metric([queue], depth)
        up.add_metric([], 1)
        yield gauge
        yield up


# --- multiprocess mode and the endpoint ------------------------------------------------------

_multiproc_dir: Path | None = None
_server = None
_server_thread: threading.Thread | None = None


def prepare_multiprocess(directory: Path) -> None:
    """Make this process and every process it starts afterwards write metrics to ``directory``.

    Call it in the parent worker process before the pool forks. The folder is created if
    needed and emptied of earlier runs' ``*.db`` files (stale files would add old counts to
    the new run). Metrics already recorded in this process stay where they were.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    export_process_variable(MULTIPROC_VARIABLE, str(directory))
    # prometheus_client picks its value class when it is first imported; it may already have
    # been imported (this module imports it), so pick again now that the variable is set.
    values.ValueClass = values.get_value_class()
    global _multiproc_dir
    _multiproc_dir = directory


def mark_process_dead(pid: int) -> None:
    """Tell multiprocess mode that the child ``pid`` exited (its live gauges are dropped).

    Its counters and histograms stay counted. A no-op outside multiprocess mode.
    """
    if _multiproc_dir is not None:
        multiprocess.mark_process_dead(pid, str(_multiproc_dir))


class _Delegate(Collector):
    """Exposes another registry's metrics through this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        return self.registry.collect()


def build_registry(settings: Settings, multiproc_dir: Path | None = None) -> CollectorRegistry:
    """What ``/metrics`` shows: the worker metrics (summed over the files of every process in
    multiprocess mode, else this process's own, process_* included) plus queue depth.

    ``multiproc_dir`` defaults to the folder given to :func:`prepare_multiprocess`, if any.
    """
    directory = multiproc_dir or _multiproc_dir
    registry = CollectorRegistry()
    if directory is not None:
        multiprocess.MultiProcessCollector(registry, path=str(directory))
    else:
        registry.register(_Delegate(REGISTRY))
    registry.register(QueueDepthCollector(settings.redis_url, settings.redis_key_prefix))
    return registry


def start_metrics_server(settings: Settings) -> None:
    """Serve ``/metrics`` on ``settings.metrics_port`` (all interfaces) from a daemon thread.

    Nothing happens when the port is unset, or when this process already serves it.
    """
    global _server, _server_thread
    if settings.metrics_port is None or _server is not None:
        return
    _server, _server_thread = start_http_server(
        settings.metrics_port, addr="0.0.0.0", registry=build_registry(settings)
    )
    log.info("serving Prometheus metrics on port %d", settings.metrics_port)


def stop_metrics_server() -> None:
    """Stop the endpoint started by :func:`start_metrics_server` (tests, clean shutdown)."""
    global _server, _server_thread
    if _server is None:
        return
    _server.shutdown()
    _server.server_close()
    if _server_thread is not None:
        _server_thread.join(timeout=5)
    _server, _server_thread = None, None
