"""Celery tasks: thin wrappers over :mod:`qc_worker.flows` on one base class, :class:`QcTask`.

The retry policy is Celery's own: ``autoretry_for`` the transient failures
(:data:`qc_worker.flows.TRANSIENT`: the store, the database connection, Redis, a rescan
that reached a worker running another model), ``retry_backoff`` doubling from 1 s,
``retry_backoff_max`` = ``QC_RETRY_BACKOFF_MAX_S``, ``retry_jitter`` (full jitter: each wait
is drawn between 0 and the capped back-off) and ``max_retries`` = ``QC_RETRY_MAX``. After the
last retry the task fails, and its ``on_failure`` hook gives up on the job's items *with the
reason recorded*, so the job still ends. Everything that is the input's fault is recorded
by the flows and never reaches the task. An unexpected error (a bug, or input that breaks
a library in a new way) never leaves a job waiting either: a screening chunk retries it (its
next run screens the items one by one, so the one at fault fails alone,
:data:`qc_worker.flows.CRASH_LIMIT`), any other task fails its job with the error.

The hooks also keep the job's ids in every log line and time each run for the metrics.

The worker process builds its :class:`~qc_worker.flows.WorkerContext` (database engine,
store, detector) in ``worker_process_init``: after the fork, so no CUDA context, database
connection or boto3 client crosses from the parent into a child.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager
from typing import Any

from celery import Task
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown
from celery.utils.time import get_exponential_backoff_interval

from qc_worker import flows, metrics
from qc_worker.celery_app import app
from qc_worker.config import get_settings
from qc_worker.logs import configure_logging, log_context
from qc_worker.storage import open_store
from qc_worker.vocabulary import TaskName, TaskState

log = logging.getLogger(__name__)

_context: flows.WorkerContext | None = None


def context() -> flows.WorkerContext:
    """This process's context, made once (eagerly in prefork children, lazily otherwise)."""
    global _context
    if _context is None:
        from qc_worker.db.engine import get_sessionmaker

        settings = get_settings()
        _context = flows.WorkerContext(
            settings,
            get_sessionmaker(settings.database_url),
            open_store(settings),
            on_outcome=metrics.record_outcome,
        )
    return _context


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Connecting here stops Celery from configuring logging itself: ours (text or JSON,
    with job and image ids, secrets masked) is the one every process uses."""
    configure_logging(get_settings())


@worker_process_shutdown.connect
def _child_exit(**_: Any) -> None:
    metrics.mark_process_dead(os.getpid())


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    from qc_worker.db.engine import dispose_engines

    global _context
    dispose_engines()  # never share the parent's pooled connections across the fork
    _context = None
    context().screener  # noqa: B018  (load the model now, not inside the first task)


def _send(name: str, args: list, queue: str) -> None:
    app.send_task(name, args=args, queue=queue)


_SETTINGS = get_settings()


class QcTask(Task):
    """The base of every task: Celery's retry machinery with the configured policy, and
    hooks that log with the job's ids, time the run and give up on the job when it fails."""

    autoretry_for = flows.TRANSIENT
    retry_backoff = True
    retry_backoff_max = _SETTINGS.retry_backoff_max_s
    retry_jitter = True
    max_retries = _SETTINGS.retry_max

    def give_up(self, args: tuple, reason: str) -> None:
        """Record that the task's work ended without being done (default: its job failed)."""
        flows.give_up(context(), args[0], None, reason)

    def _logging(self, args: tuple) -> AbstractContextManager:
        return log_context(job_id=args[0] if args else None, task_id=self.request.id)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.request.qc_started = time.perf_counter()
        with self._logging(args):
            # self.run, not super().__call__: that would push a second, empty request and
            # hide the delivery's id and retry count from the retry machinery.
            return self.run(*args, **kwargs)

    def _record(self, state: TaskState) -> None:
        started = getattr(self.request, "qc_started", None)
        seconds = time.perf_counter() - started if started is not None else 0.0
        metrics.record_task(self.name, state, seconds)

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        self._record(TaskState.SUCCEEDED)

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        with self._logging(args):
            retry = f"retry {self.request.retries + 1} of {self.max_retries}"
            if flows.is_transient(exc):
                log.warning("%s: transient failure (%s: %s); %s", self.name, type(exc).__name__, exc, retry)
            else:
                # A bug or a library broken by the input: with its traceback, at once (the
                # retries that follow screen the chunk's items one by one).
                log.error("%s failed", self.name, exc_info=(type(exc), exc, exc.__traceback__))
                log.warning("%s: %s, one item at a time", self.name, retry)
        self._record(TaskState.RETRIED)

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        with self._logging(args):
            retries = self.request.retries
            reason = f"{type(exc).__name__}: {exc}"
            transient = flows.is_transient(exc)
            if transient and retries < self.max_retries:
                # Transient by flows.is_transient but not by class (an invalidated DBAPIError).
                self._retry_later(
                    get_exponential_backoff_interval(1, retries, self.retry_backoff_max, self.retry_jitter)
                )
                return
            if transient:
                log.error("%s gave up after %d retries: %s", self.name, retries, reason)
                reason = f"gave up after {retries} retries: {reason}"
            else:
                log.error("%s failed", self.name, exc_info=getattr(einfo, "exc_info", None))
                reason = f"internal error: {reason}"
            try:
                self.give_up(args, reason)
            except Exception as again:
                if not flows.is_transient(again):
                    raise
                # The give-up needs a database that is still down: keep the message (a retry
                # at the back-off cap, without limit) rather than let the job wait forever.
                log.error(
                    "%s: cannot record the give-up (%s); trying again in %d s", self.name, again, self.retry_backoff_max
                )
                self._retry_later(self.retry_backoff_max)
                return
        self._record(TaskState.FAILED)

    def _retry_later(self, countdown: float) -> None:
        """Queue this delivery again, one retry further on, as ``Task.retry`` does (but with
        no limit: callers check it where one applies)."""
        request = self.request
        self.signature_from_request(request, countdown=countdown, retries=request.retries + 1).apply_async()
        self._record(TaskState.RETRIED)


class ChunkTask(QcTask):
    """A screening chunk retries *any* failure: its next run screens the items one by one,
    so an item that breaks something fails alone instead of failing the chunk."""

    autoretry_for = (Exception,)

    def give_up(self, args: tuple, reason: str) -> None:
        flows.give_up(context(), args[0], args[1], reason)


@app.task(bind=True, base=QcTask, name=TaskName.EXTRACT_FRAMES.value)
def extract_frames(self: Task, job_id: int) -> None:
    flows.run_frames_job(context(), job_id, _send)


@app.task(bind=True, base=QcTask, name=TaskName.SCREEN_SUBMISSION.value)
def screen_submission(self: Task, job_id: int) -> None:
    flows.run_submission_job(context(), job_id, _send)


@app.task(bind=True, base=QcTask, name=TaskName.PLAN_RESCAN.value)
def plan_rescan(self: Task, job_id: int) -> None:
    flows.run_rescan_plan(context(), job_id, _send)


@app.task(bind=True, base=ChunkTask, name=TaskName.SCREEN_CHUNK.value)
def screen_chunk(self: Task, job_id: int, item_ids: list[int]) -> None:
    flows.run_screen_chunk(context(), job_id, item_ids)


class _BeatTask(QcTask):
    def give_up(self, args: tuple, reason: str) -> None:
        """No job exists yet: the failure is in the log and the metrics, and beat tries again tomorrow."""


@app.task(bind=True, base=_BeatTask, name=TaskName.NIGHTLY_RESCAN.value)
def nightly_rescan(self: Task) -> None:
    """Beat's entry: a rescan job for the model this worker runs, planned by its own task
    (so a retry of the planning never makes a second job)."""
    ctx = context()
    job_id = flows.create_rescan_job(
        ctx.sessions, ctx.screener.model_checksum, max_age_days=get_settings().rescan_max_age_days
    )
    _send(TaskName.PLAN_RESCAN, [job_id], "rescan")
