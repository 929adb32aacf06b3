"""The words every layer shares: verdicts, region kinds, statuses, source and failure kinds,
task names.

Each word is defined once, here, so that the detector, the pipeline, the database, the
metrics and the CLI cannot drift apart (a verdict spelled ``"Pass"`` in one place, a task
renamed in the router but not in the CLI). They are :class:`~enum.StrEnum` members: equal
to their plain string value, so rows, JSON documents and Celery messages that carry the
string keep working, while the code names the member. The database's enumeration columns
use these classes directly (:mod:`qc_worker.db.models`).

This module imports nothing from the project, so any layer may import it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FailureKind",
    "ImageStatus",
    "JobItemStatus",
    "JobKind",
    "JobStatus",
    "OutcomeStatus",
    "QueueName",
    "RegionKind",
    "RegionVerdict",
    "SourceKind",
    "TaskName",
    "TaskState",
    "Verdict",
]


class Verdict(StrEnum):
    """An image's screening verdict (:mod:`qc_worker.detector.regions`)."""

    PASS = "pass"
    REVIEW = "review"
    REJECT = "reject"


class RegionVerdict(StrEnum):
    """One region's verdict: its blurred share reached the limit of its kind, or not."""

    BLURRED = "blurred"
    SHARP = "sharp"


class RegionKind(StrEnum):
    """Where a region comes from: a blur component, a face, the salient foreground, a grid cell."""

    COMPONENT = "component"
    FACE = "face"
    FOREGROUND = "foreground"
    GRID = "grid"


class OutcomeStatus(StrEnum):
    """What happened to one input of a screening batch (:class:`qc_worker.values.Outcome`)."""

    SCREENED = "screened"
    FAILED = "failed"


class ImageStatus(StrEnum):
    OK = "ok"  # decoded and validated; may be screened
    FAILED = "failed"  # could not be read, decoded or validated; see failure_reason


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    PARTIALLY_FAILED = "partially_failed"


class JobItemStatus(StrEnum):
    PENDING = "pending"
    SCREENED = "screened"
    FAILED = "failed"


class JobKind(StrEnum):
    """Usual values of ``jobs.kind`` (the column is free text, so new kinds need no migration)."""

    FRAMES = "frames"
    VENDOR = "vendor"
    RESCAN = "rescan"
    LOCAL = "local"


class SourceKind(StrEnum):
    """Usual values of ``images.source_kind`` (free text in the database)."""

    FRAME = "frame"  # a thumbnail sampled from a title's video
    VENDOR = "vendor"  # a third-party submission
    CATALOG = "catalog"  # existing catalog artwork in the object store
    LOCAL = "local"  # a local file (`qc screen ./folder`)


class FailureKind(StrEnum):
    """Why an image could not be screened, in the few words metrics may use as labels."""

    TOO_LARGE = "too_large"
    VIDEO = "video"
    MISSING = "missing"
    DECODE = "decode"
    DATABASE = "database"
    STORAGE = "storage"
    OTHER = "other"


class QueueName(StrEnum):
    """The job queues, in the order a worker serves them (the rescan queue yields to the others)."""

    FRAMES = "frames"
    VENDOR = "vendor"
    SCREEN = "screen"
    RESCAN = "rescan"


class TaskName(StrEnum):
    """Celery task names, as registered by :mod:`qc_worker.tasks` and routed by
    :mod:`qc_worker.celery_app`."""

    EXTRACT_FRAMES = "qc.extract_frames"
    SCREEN_SUBMISSION = "qc.screen_submission"
    SCREEN_CHUNK = "qc.screen_chunk"
    PLAN_RESCAN = "qc.plan_rescan"
    NIGHTLY_RESCAN = "qc.nightly_rescan"


class TaskState(StrEnum):
    """How a Celery task run ended, for the task metrics."""

    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    FAILED = "failed"
