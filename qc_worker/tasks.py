"""Celery tasks: thin wrappers over :mod:`qc_worker.flows`, adding only the retry policy.

Transient failures (the store, the database connection, Redis, a rescan that reached a
worker running another model) retry with exponential back-off and jitter, capped at
``retry_backoff_max_s``, at most ``retry_max`` times; after the last one the task gives
up on its items *with the reason recorded*, so the job still ends. Everything else that
is the input's fault is recorded by the flows and never retried.

The worker process builds its :class:`~qc_worker.flows.WorkerContext` (database engine,
store, detector) in ``worker_process_init``: after the fork, so no CUDA context, database
connection or boto3 client crosses from the parent into a child.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Retry
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown

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


def _run(
    task: Task,
    job_id: int,
    body: Callable[[], Any],
    give_up: Callable[[str], None],
    *,
    chunk: bool = False,
) -> Any:
    """Run a flow with the job's ids in every log line, timing it for the metrics, and
    retrying transient failures with capped, jittered exponential back-off.

    An unexpected error (a bug, or input that breaks a library in a new way) never leaves a
    job waiting: a screening chunk is retried, and its next run screens the items one by one
    so the one at fault fails alone (:data:`qc_worker.flows.CRASH_LIMIT`); any other task
    fails its job with the error as the reason.
    """
    settings = get_settings()
    t0 = time.perf_counter()
    state = TaskState.FAILED
    with log_context(job_id=job_id, task_id=task.request.id):
        try:
            result = body()
            state = TaskState.SUCCEEDED
            return result
        except Retry:
            state = TaskState.RETRIED
            raise
        except Exception as exc:
            retries = task.request.retries
            reason = f"{type(exc).__name__}: {exc}"
            if not flows.is_transient(exc):
                log.exception("%s failed", task.name)
                if not chunk or retries >= settings.retry_max:
                    _give_up(task, give_up, f"internal error: {reason}")
                    raise
            if retries >= settings.retry_max:
                log.error("%s gave up after %d retries: %s", task.name, retries, reason)
                _give_up(task, give_up, f"gave up after {retries} retries: {reason}")
                return None
            countdown = min(settings.retry_backoff_max_s, 2**retries) * (0.5 + random.random())
            log.warning(
                "%s: transient failure (%s); retry %d in %.1f s",
                task.name,
                reason,
                retries + 1,
                countdown,
            )
            state = TaskState.RETRIED
            raise task.retry(exc=exc, countdown=countdown, max_retries=settings.retry_max) from exc
        finally:
            metrics.record_task(task.name, state, time.perf_counter() - t0)


def _give_up(task: Task, give_up: Callable[[str], None], reason: str) -> None:
    """Record the give-up; if that needs a database that is still down, keep the message
    (retry at the back-off cap, without limit) rather than let the job wait forever."""
    try:
        give_up(reason)
    except Exception as exc:
        if not flows.is_transient(exc):
            raise
        cap = get_settings().retry_backoff_max_s
        log.error("%s: cannot record the give-up (%s); trying again in %d s", task.name, exc, cap)
        raise task.retry(exc=exc, countdown=cap, max_retries=None) from exc


@app.task(bind=True, name=TaskName.EXTRACT_FRAMES.value)
def extract_frames(self: Task, job_id: int) -> None:
    ctx = context()
    _run(
        self,
        job_id,
        lambda: flows.run_frames_job(ctx, job_id, _send),
        lambda r: flows.give_up(ctx, job_id, None, r),
    )


@app.task(bind=True, name=TaskName.SCREEN_SUBMISSION.value)
def screen_submission(self: Task, job_id: int) -> None:
    ctx = context()
    _run(
        self,
        job_id,
        lambda: flows.run_submission_job(ctx, job_id, _send),
        lambda r: flows.give_up(ctx, job_id, None, r),
    )


@app.task(bind=True, name=TaskName.PLAN_RESCAN.value)
def plan_rescan(self: Task, job_id: int) -> None:
    ctx = context()
    _run(
        self,
        job_id,
        lambda: flows.run_rescan_plan(ctx, job_id, _send),
        lambda r: flows.give_up(ctx, job_id, None, r),
    )


@app.task(bind=True, name=TaskName.SCREEN_CHUNK.value)
def screen_chunk(self: Task, job_id: int, item_ids: list[int]) -> None:
    ctx = context()
    _run(
        self,
        job_id,
        lambda: flows.run_screen_chunk(ctx, job_id, item_ids),
        lambda r: flows.give_up(ctx, job_id, item_ids, r),
        chunk=True,
    )


@app.task(bind=True, name=TaskName.NIGHTLY_RESCAN.value)
def nightly_rescan(self: Task) -> None:
    """Beat's entry: a rescan job for the model this worker runs, planned by its own task
    (so a retry of the planning never makes a second job)."""
    ctx = context()
    job_id = flows.create_rescan_job(
        ctx.sessions, ctx.screener.model_checksum, max_age_days=get_settings().rescan_max_age_days
    )
    _send(TaskName.PLAN_RESCAN, [job_id], "rescan")
