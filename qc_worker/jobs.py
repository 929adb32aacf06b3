"""Job bookkeeping in the database: items, counts, and a job's end.

A job's progress is never a counter that tasks increment: Redis redelivers a task whose
worker died, and Celery retries failed ones, so a counter would count twice. Instead each
image a job must screen is a ``job_items`` row (unique per job and URI), tasks move rows
from ``pending`` to ``screened`` or ``failed``, and :func:`finalise_job` recomputes the
counts from the rows, under a row lock on the job. Calling it any number of times, from
any number of tasks, gives the same answer; it is what a Celery chord would do, without
a chord's thousand-member bookkeeping in Redis.

A job whose items are all known has ``payload["planned"] = True``; only then can it end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from qc_worker.db.models import Image, Job, JobItem, Screening, Title, Video, utcnow
from qc_worker.db.writes import dialect_insert
from qc_worker.values import ImageOrigin, Outcome, Source
from qc_worker.vocabulary import ImageStatus, JobItemStatus, JobKind, JobStatus, OutcomeStatus, SourceKind

#: Kinds of image source per job kind, as stored in images.source_kind.
SOURCE_KIND = {JobKind.FRAMES: SourceKind.FRAME, JobKind.VENDOR: SourceKind.VENDOR}
FINAL = (JobStatus.DONE, JobStatus.FAILED, JobStatus.PARTIALLY_FAILED)


def create_job(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    title_id: int | None = None,
    video_id: int | None = None,
) -> Job:
    job = Job(
        kind=kind,
        status=JobStatus.QUEUED,
        payload=dict(payload),
        title_id=title_id,
        video_id=video_id,
    )
    session.add(job)
    session.flush()
    return job


def upsert_title(session: Session, external_id: str, name: str | None) -> Title:
    stmt = dialect_insert(session, Title).values(
        external_id=external_id, name=name, created_at=utcnow(), updated_at=utcnow()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Title.external_id],
        set_={
            "name": func.coalesce(stmt.excluded.name, Title.__table__.c.name),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    title_id = session.execute(stmt.returning(Title.id)).scalar_one()
    return session.get(Title, title_id, populate_existing=True)


def upsert_video(session: Session, uri: str, title_id: int | None, **fields: Any) -> Video:
    values = {
        "uri": uri,
        "title_id": title_id,
        **fields,
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    stmt = dialect_insert(session, Video).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Video.uri],
        set_={k: getattr(stmt.excluded, k) for k in ("title_id", *fields, "updated_at")},
    )
    video_id = session.execute(stmt.returning(Video.id)).scalar_one()
    return session.get(Video, video_id, populate_existing=True)


def start_job(session: Session, job_id: int) -> Job | None:
    """Mark a job running (first start) and count the attempt; ``None`` if it is gone."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return None
    job.attempts += 1
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.RUNNING
        job.started_at = utcnow()
    return job


def add_items(session: Session, job_id: int, items: Iterable[Mapping[str, Any]]) -> None:
    """Add items (``uri`` and optionally ``timestamp_s``, ``frame_index``, ``status``,
    ``reason``); an item already in the job is left as it is."""
    rows = [
        {
            "job_id": job_id,
            "uri": i["uri"],
            "timestamp_s": i.get("timestamp_s"),
            "frame_index": i.get("frame_index"),
            "status": i.get("status", JobItemStatus.PENDING),
            "reason": i.get("reason"),
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        for i in items
    ]
    for start in range(0, len(rows), 1000):
        session.execute(
            dialect_insert(session, JobItem).on_conflict_do_nothing(index_elements=[JobItem.job_id, JobItem.uri]),
            rows[start : start + 1000],
        )


def mark_planned(session: Session, job_id: int, **facts: Any) -> None:
    """All the job's items are recorded; ``facts`` (sampling stats...) join its payload."""
    job = session.get(Job, job_id, with_for_update=True)
    job.payload = {**job.payload, **facts, "planned": True}
    job.items_total = session.scalar(select(func.count()).where(JobItem.job_id == job_id))


def pending_item_ids(session: Session, job_id: int) -> list[int]:
    return list(
        session.scalars(
            select(JobItem.id)
            .where(JobItem.job_id == job_id, JobItem.status == JobItemStatus.PENDING)
            .order_by(JobItem.id)
        )
    )


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def sources_for(session: Session, job: Job, item_ids: Sequence[int]) -> list[tuple[int, Source]]:
    """The still-pending items among ``item_ids``, as pipeline sources carrying the job's
    context (title, video, vendor), so image rows record where each image came from."""
    items = session.scalars(
        select(JobItem)
        .where(
            JobItem.id.in_(item_ids),
            JobItem.job_id == job.id,
            JobItem.status == JobItemStatus.PENDING,
        )
        .order_by(JobItem.id)
    ).all()
    kind = SOURCE_KIND.get(job.kind)
    return [
        (
            item.id,
            Source(
                item.uri,
                ImageOrigin(
                    source_kind=kind,
                    title_id=job.title_id,
                    video_id=job.video_id,
                    job_id=job.id,
                    timestamp_s=item.timestamp_s,
                    frame_index=item.frame_index,
                    vendor=job.payload.get("vendor"),
                ),
            ),
        )
        for item in items
    ]


def item_attempts(session: Session, item_ids: Sequence[int]) -> dict[int, int]:
    """Unclean starts so far of each item (see :data:`qc_worker.flows.CRASH_LIMIT`)."""
    if not item_ids:
        return {}
    return dict(session.execute(select(JobItem.id, JobItem.attempts).where(JobItem.id.in_(item_ids))).all())


def change_attempts(session: Session, item_ids: Sequence[int], delta: int) -> None:
    session.execute(update(JobItem).where(JobItem.id.in_(item_ids)).values(attempts=JobItem.attempts + delta))


def record_outcomes(session: Session, results: Iterable[tuple[int, Outcome]]) -> None:
    for item_id, outcome in results:
        session.execute(
            update(JobItem)
            .where(JobItem.id == item_id)
            .values(
                status=JobItemStatus.SCREENED if outcome.status == OutcomeStatus.SCREENED else JobItemStatus.FAILED,
                image_id=outcome.image_id,
                reason=outcome.reason,
                updated_at=utcnow(),
            )
        )


def fail_items(session: Session, item_ids: Sequence[int], reason: str) -> None:
    """Give up on still-pending items (after the last retry), saying why."""
    session.execute(
        update(JobItem)
        .where(JobItem.id.in_(item_ids), JobItem.status == JobItemStatus.PENDING)
        .values(status=JobItemStatus.FAILED, reason=reason, updated_at=utcnow())
    )


def fail_job(session: Session, job_id: int, error: str) -> None:
    """The job as a whole cannot go on (its video does not decode, its listing failed)."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return
    fail_items(
        session,
        [i.id for i in session.scalars(select(JobItem).where(JobItem.job_id == job_id))],
        error,
    )
    job.error = error
    job.payload = {**job.payload, "planned": True}
    _settle(session, job)


def finalise_job(session: Session, job_id: int) -> JobStatus | None:
    """Recount the job from its items and end it when nothing is pending. Idempotent."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return None
    return _settle(session, job)


def _settle(session: Session, job: Job) -> JobStatus:
    counts = dict(
        session.execute(
            select(JobItem.status, func.count()).where(JobItem.job_id == job.id).group_by(JobItem.status)
        ).all()
    )
    total = sum(counts.values())
    screened = counts.get(JobItemStatus.SCREENED, 0)
    failed = counts.get(JobItemStatus.FAILED, 0)
    job.items_total, job.items_done, job.items_failed = total, screened, failed
    if job.payload.get("planned") and counts.get(JobItemStatus.PENDING, 0) == 0:
        if failed == 0 and job.error is None:
            status = JobStatus.DONE
        elif screened > 0:
            status = JobStatus.PARTIALLY_FAILED
        else:
            status = JobStatus.FAILED
        if job.status != status:
            job.status = status
            job.finished_at = utcnow()
    elif job.status == JobStatus.QUEUED:
        job.status = JobStatus.RUNNING
    return job.status


def rescan_candidates(
    session: Session,
    model_version_id: int,
    *,
    since: datetime | None = None,
    max_age_days: int | None = None,
) -> list[str]:
    """URIs of readable images the model has not screened (or screened too long ago).

    ``since`` limits the rescan to images first recorded at or after it.
    """
    screened = select(Screening.id).where(
        Screening.image_id == Image.id, Screening.model_version_id == model_version_id
    )
    if max_age_days is not None:
        screened = screened.where(Screening.updated_at >= utcnow() - timedelta(days=max_age_days))
    query = select(Image.uri).where(Image.status == ImageStatus.OK, ~exists(screened))
    if since is not None:
        query = query.where(Image.created_at >= since)
    return list(dict.fromkeys(session.scalars(query.order_by(Image.id))))


def job_summary(session: Session, job_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Jobs (newest first) or one job, as plain dicts for `qc jobs`."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if job_id is not None:
        query = select(Job).where(Job.id == job_id)
    out = []
    for job in session.scalars(query):
        reasons = (
            session.execute(
                select(JobItem.uri, JobItem.reason)
                .where(JobItem.job_id == job.id, JobItem.status == JobItemStatus.FAILED)
                .order_by(JobItem.id)
                .limit(20)
            ).all()
            if job_id is not None
            else []
        )
        out.append(
            {
                "id": job.id,
                "kind": job.kind,
                "status": str(job.status),
                "total": job.items_total,
                "screened": job.items_done,
                "failed": job.items_failed,
                "pending": max(job.items_total - job.items_done - job.items_failed, 0),
                "error": job.error,
                "attempts": job.attempts,
                "created_at": job.created_at.isoformat() if job.created_at else None,
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                "failures": [{"uri": u, "reason": r} for u, r in reasons],
            }
        )
    return out


__all__ = [
    "FINAL",
    "add_items",
    "change_attempts",
    "chunks",
    "create_job",
    "fail_items",
    "fail_job",
    "finalise_job",
    "item_attempts",
    "job_summary",
    "mark_planned",
    "pending_item_ids",
    "record_outcomes",
    "rescan_candidates",
    "sources_for",
    "start_job",
    "upsert_title",
    "upsert_video",
]
