"""The Celery app: queues, routes, beat schedule and the reliability settings, in one place.

Why each setting is what it is:

* JSON only (``accept_content=["json"]``): a pickle payload on the queue would run code in
  the worker; Celery refuses any message whose content type is not accepted.
* ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged when it has
  finished, so a worker killed mid-batch leaves its message to be delivered again.
* Redis ``visibility_timeout``: Redis redelivers an unacknowledged message after it, so
  Settings forces every task's hard time limit to at most half of it, and big jobs are
  split into chunks of ``screen_chunk_size`` images.
* ``queue_order_strategy="priority"``: a worker consuming ``frames,vendor,screen,rescan``
  asks Redis for the queues in that order (one BRPOP over the keys in order), so the nightly
  rescan only runs when no interactive work is waiting.
* prefetch multiplier 1 (configurable): a GPU worker must not hoard tasks another GPU could run.
* No result backend: job state lives in PostgreSQL (``jobs`` and ``job_items``).
* ``worker_proc_alive_timeout``: a pool process loads the model before it reports "up"
  (``worker_process_init``); Celery's default of 4 s killed every replacement process
  that took longer (a busy CPU, a CUDA context), so after one lost process the pool
  never came back. Allow ``PROCESS_START_TIMEOUT_S``.
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from qc_worker.config import Settings, get_settings
from qc_worker.vocabulary import QueueName, TaskName

#: Every queue, in the order a worker serves them (the rescan queue yields to the others).
QUEUES = tuple(q.value for q in QueueName)

#: Seconds a new pool process may take to load the model and report that it is up.
PROCESS_START_TIMEOUT_S = 120.0

#: Task names are part of the wire format between versions: keep them stable.
TASK_ROUTES = {
    TaskName.EXTRACT_FRAMES.value: {"queue": "frames"},
    TaskName.SCREEN_SUBMISSION.value: {"queue": "vendor"},
    TaskName.SCREEN_CHUNK.value: {"queue": "screen"},
    TaskName.PLAN_RESCAN.value: {"queue": "rescan"},
    TaskName.NIGHTLY_RESCAN.value: {"queue": "rescan"},
}


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured from ``settings`` (tests build one per Redis key prefix)."""
    app = Celery("qc_worker", broker=settings.redis_url, include=["qc_worker.tasks"])
    hour, minute = (int(part) for part in settings.rescan_at.split(":"))
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "queue_order_strategy": "priority",
    }
    if settings.redis_key_prefix:
        transport["global_keyprefix"] = settings.redis_key_prefix
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        worker_proc_alive_timeout=PROCESS_START_TIMEOUT_S,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # On a lost broker connection, stop acks_late tasks that could no longer be acked;
        # Redis redelivers them after the visibility timeout (every task is idempotent).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_default_queue="screen",
        task_routes=TASK_ROUTES,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(settings.task_time_limit_s - 30, settings.task_time_limit_s * 9 // 10),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
        enable_utc=True,
        beat_schedule={
            "nightly-rescan": {
                "task": TaskName.NIGHTLY_RESCAN.value,
                "schedule": crontab(hour=hour, minute=minute),
                "options": {"queue": "rescan"},
            }
        },
        beat_schedule_filename=str(settings.beat_schedule_path),
    )
    return app


#: The process's app, for `celery -A qc_worker.celery_app` and for the tasks module.
app = make_celery(get_settings())
