"""The job flows the queue runs: a title's frames, a vendor submission, a rescan, a chunk.

Written without Celery: each flow takes a :class:`WorkerContext` and a ``dispatch``
callable that queues follow-up work, so the Celery tasks stay thin wrappers (retry policy
only) and every flow is safe to run twice:

* items are keyed by (job, URI) and inserted with ON CONFLICT DO NOTHING;
* thumbnails go to deterministic keys, so a rerun overwrites the same objects with the
  same bytes and finds the same image rows;
* a chunk screens only items still ``pending``; screenings are upserts per (image, model);
* :func:`qc_worker.jobs.finalise_job` recounts from the rows.

The jobs themselves are created here too (:func:`create_title_jobs`,
:func:`create_submission_job`, :func:`create_rescan_job`) and sent with :func:`queue_jobs`,
so the CLI only parses arguments and reports.

Errors: :class:`~qc_worker.storage.TransientStorageError`, database connection errors and
:class:`ModelMismatch` propagate for the task to retry; everything that is the input's
fault (a video that does not decode, a missing key) is recorded and the flow goes on.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from qc_worker import jobs
from qc_worker.catalog import CatalogRow
from qc_worker.config import Settings
from qc_worker.db.models import Job
from qc_worker.frames import FrameSampler, VideoError, encode_thumbnail, probe
from qc_worker.logs import log_context
from qc_worker.pipeline import Screener, load_detector
from qc_worker.storage import RoutingStore, StorageError, TransientStorageError
from qc_worker.values import Outcome, Source
from qc_worker.vocabulary import JobKind, JobStatus, OutcomeStatus, TaskName

log = logging.getLogger(__name__)

#: ``dispatch(task_name, args, queue)`` queues follow-up work.
Dispatch = Callable[[str, list, str], None]
#: How the CLI sends a new job's task: ``send(task, job_id)``.
Send = Callable[[TaskName, int], None]


class ModelMismatch(Exception):
    """A rescan job was made for another model than this worker runs (mid roll-out)."""


#: Failures of the services, not of the work: the same call may well succeed later.
TRANSIENT: tuple[type[BaseException], ...] = (
    TransientStorageError,
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    ModelMismatch,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


@dataclass
class WorkerContext:
    """What a worker process holds for its whole life: settings, database, store, model."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: RoutingStore
    on_outcome: Callable[[Outcome], None] | None = None
    _screener: Screener | None = field(default=None, repr=False)

    @property
    def screener(self) -> Screener:
        """The detector, loaded once per process on first use (or at worker start)."""
        if self._screener is None:
            s = self.settings
            detector = load_detector(s)
            self._screener = Screener(
                s,
                detector,
                self.sessions,
                store=self.store,
                overlay_store=self.store if s.write_overlays else None,
                overlay_prefix=f"overlays/{detector.meta.checksum[:12]}/",
            )
            log.info("detector loaded: model version %s", self._screener.model_version_id)
        return self._screener


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def thumbnail_key(external_id: str, video_sha256: str, frame_index: int) -> str:
    """Where a frame's thumbnail lives: the same frame of the same video, the same key."""
    return f"thumbnails/{_UNSAFE.sub('_', external_id)[:120]}/{video_sha256[:16]}/{frame_index:07d}.jpg"


def _dispatch_pending(ctx: WorkerContext, job_id: int, queue: str, dispatch: Dispatch) -> int:
    with ctx.sessions.begin() as s:
        pending = jobs.pending_item_ids(s, job_id)
    for chunk in jobs.chunks(pending, ctx.settings.screen_chunk_size):
        dispatch(TaskName.SCREEN_CHUNK, [job_id, chunk], queue)
    if not pending:
        with ctx.sessions.begin() as s:
            jobs.finalise_job(s, job_id)
    return len(pending)


def _start(ctx: WorkerContext, job_id: int) -> tuple[bool, dict] | None:
    """Mark the job running; ``(already planned, payload)``, or None when it has ended or is gone."""
    with ctx.sessions.begin() as s:
        job = jobs.start_job(s, job_id)
        if job is None:
            log.warning("job %s does not exist; nothing to do", job_id)
            return None
        if job.status in jobs.FINAL:
            return None
        return bool(job.payload.get("planned")), dict(job.payload)


def run_frames_job(ctx: WorkerContext, job_id: int, dispatch: Dispatch) -> None:
    """Video -> thumbnails in the store -> items -> screening chunks on the ``screen`` queue."""
    started = _start(ctx, job_id)
    if started is None:
        return
    planned, payload = started
    if not planned:
        try:
            _extract(ctx, job_id, payload)
        except (VideoError, StorageError) as exc:
            if isinstance(exc, TransientStorageError):
                raise
            log.warning("job %s: %s", job_id, exc)
            with ctx.sessions.begin() as s:
                jobs.fail_job(s, job_id, f"{payload.get('video_uri')}: {exc}")
            return
    _dispatch_pending(ctx, job_id, "screen", dispatch)


def _extract(ctx: WorkerContext, job_id: int, payload: dict) -> None:
    uri = payload["video_uri"]
    config = ctx.settings.frames
    with tempfile.TemporaryDirectory(prefix="qc-video-") as tmp:
        local = Path(tmp) / "video"
        ctx.store.download(uri, local)
        digest = hashlib.sha256()
        with local.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        video_sha = digest.hexdigest()
        info = probe(local)
        with ctx.sessions.begin() as s:
            job = s.get(Job, job_id)
            video = jobs.upsert_video(
                s,
                uri,
                job.title_id,
                sha256=video_sha,
                fps=info.fps,
                duration_s=info.duration_s,
                width=info.width,
                height=info.height,
            )
            job.video_id = video.id
            external_id = job.title.external_id if job.title else f"job-{job_id}"
        sampler = FrameSampler(config)
        items = []
        for frame in sampler.sample(local, info):
            key = thumbnail_key(external_id, video_sha, frame.index)
            thumb = ctx.store.write(key, encode_thumbnail(frame.rgb, config), "image/jpeg")
            items.append(
                {
                    "uri": thumb,
                    "timestamp_s": round(frame.timestamp_s, 3),
                    "frame_index": frame.index,
                }
            )
    stats = sampler.stats.as_dict()
    log.info("job %s: %d candidate frames from %s (%s)", job_id, len(items), uri, stats)
    if not items:
        raise VideoError(f"no usable frames ({stats['decoded']} decoded: {stats['black']} black, {stats['flat']} flat)")
    with ctx.sessions.begin() as s:
        jobs.add_items(s, job_id, items)
        jobs.mark_planned(s, job_id, sampling=stats)


def run_submission_job(ctx: WorkerContext, job_id: int, dispatch: Dispatch) -> None:
    """A vendor's files or ``s3://`` prefix -> items -> screening chunks. A URI that cannot
    be listed (missing file, path outside the roots) becomes a failed item with its reason."""
    started = _start(ctx, job_id)
    if started is None:
        return
    planned, payload = started
    if not planned:
        items = []
        for uri in payload.get("uris", []):
            try:
                found = ctx.store.list([uri], recursive=True)
            except TransientStorageError:
                raise
            except StorageError as exc:
                items.append({"uri": uri, "status": OutcomeStatus.FAILED, "reason": str(exc)})
                continue
            if not found:
                items.append(
                    {"uri": uri, "status": OutcomeStatus.FAILED, "reason": "no images found under this prefix"}
                )
            items += [{"uri": u} for u in found]
        if ctx.on_outcome:  # sources refused at listing count as failed images too
            for item in items:
                if item.get("status") == OutcomeStatus.FAILED:
                    ctx.on_outcome(Outcome(item["uri"], OutcomeStatus.FAILED, reason=item["reason"]))
        with ctx.sessions.begin() as s:
            jobs.add_items(s, job_id, items)
            jobs.mark_planned(s, job_id)
    _dispatch_pending(ctx, job_id, "screen", dispatch)


def run_rescan_plan(ctx: WorkerContext, job_id: int, dispatch: Dispatch) -> None:
    """Items = images the job's model has not screened (or screened too long ago); chunks go
    to the ``rescan`` queue, which workers serve only when nothing else waits."""
    started = _start(ctx, job_id)
    if started is None:
        return
    planned, payload = started
    screener = ctx.screener
    _check_model(screener, payload)
    if not planned:
        since = datetime.fromisoformat(payload["since"]) if payload.get("since") else None
        with ctx.sessions.begin() as s:
            uris = jobs.rescan_candidates(
                s, screener.model_version_id, since=since, max_age_days=payload.get("max_age_days")
            )
            jobs.add_items(s, job_id, [{"uri": u} for u in uris])
            jobs.mark_planned(s, job_id, model_version_id=screener.model_version_id)
    _dispatch_pending(ctx, job_id, "rescan", dispatch)


def create_title_jobs(sessions: sessionmaker[Session], rows: Sequence[CatalogRow]) -> list[int]:
    """One frame-extraction job per catalog row (its title upserted), in one transaction."""
    created = []
    with sessions.begin() as s:
        for row in rows:
            title = jobs.upsert_title(s, row.title_id, row.name)
            payload = {"video_uri": row.video_uri, "catalog_line": row.line}
            created.append(jobs.create_job(s, JobKind.FRAMES, payload, title_id=title.id).id)
    return created


def create_submission_job(sessions: sessionmaker[Session], uris: Sequence[str], vendor: str) -> int:
    """One vendor job for every image named (the worker lists prefixes and folders)."""
    with sessions.begin() as s:
        return jobs.create_job(s, JobKind.VENDOR, {"uris": list(uris), "vendor": vendor}).id


class QueueUnreachable(Exception):
    """The broker refused the jobs' tasks; the jobs not sent were marked failed."""

    def __init__(self, message: str, failed: int) -> None:
        super().__init__(message)
        self.failed = failed


def queue_jobs(sessions: sessionmaker[Session], to_send: Sequence[tuple[int, TaskName]], send: Send) -> None:
    """Send one task per new job with ``send(task, job_id)``. When the broker cannot be
    reached, every job not yet sent is marked failed with the reason before
    :class:`QueueUnreachable` is raised: its row says so, and nothing waits forever for a
    message that never left."""
    sent = 0
    try:
        for job_id, task in to_send:
            send(task, job_id)
            sent += 1
    except Exception as exc:  # kombu raises several types for an unreachable broker
        reason = f"could not queue the job: {type(exc).__name__}: {exc}"
        with sessions.begin() as s:
            for job_id, _ in to_send[sent:]:
                jobs.fail_job(s, job_id, reason)
        raise QueueUnreachable(f"{type(exc).__name__}: {exc}", len(to_send) - sent) from exc


def create_rescan_job(
    sessions: sessionmaker[Session],
    model_checksum: str | None,
    *,
    since: datetime | None = None,
    max_age_days: int | None = None,
) -> int:
    payload = {
        "model_checksum": model_checksum,
        "since": since.isoformat() if since else None,
        "max_age_days": max_age_days,
    }
    with sessions.begin() as s:
        return jobs.create_job(s, JobKind.RESCAN, payload).id


def _check_model(screener: Screener, payload: dict) -> None:
    wanted = payload.get("model_checksum")
    if wanted and wanted != screener.model_checksum:
        raise ModelMismatch(f"job is for model {wanted[:12]}, this worker runs {screener.model_checksum[:12]}")


#: An item whose screening was cut short this many times (the worker process died or hit
#: the time limit while it was in hand) is failed instead of tried again: without this a
#: poison image would kill worker after worker, redelivered forever (acks_late +
#: reject_on_worker_lost requeue the message every time).
CRASH_LIMIT = 3


def run_screen_chunk(ctx: WorkerContext, job_id: int, item_ids: Sequence[int]) -> JobStatus | None:
    """Screen the chunk's pending items, recording outcomes as they finish, then settle the job.

    Already-finished items are skipped, so a redelivered chunk only does what is left. Each
    item's ``attempts`` counts starts that did not end cleanly; a chunk that finds one left
    over from a run that died screens its items one at a time, so the image that kills the
    worker is found and failed after :data:`CRASH_LIMIT` tries and the others go through.
    """
    with ctx.sessions.begin() as s:
        job = s.get(Job, job_id)
        if job is None:
            log.warning("job %s does not exist; dropping its chunk", job_id)
            return None
        pairs = jobs.sources_for(s, job, item_ids)
        payload = dict(job.payload)
        kind = job.kind
        attempts = jobs.item_attempts(s, [i for i, _ in pairs])
    if pairs:
        screener = ctx.screener
        if kind == JobKind.RESCAN:
            _check_model(screener, payload)
        careful = any(attempts.values())
        if careful:
            log.warning(
                "job %s: a chunk was cut short before; screening its %d items one by one",
                job_id,
                len(pairs),
            )
        groups = (
            [[p] for p in pairs]
            if careful
            else [pairs[i : i + ctx.settings.batch_size] for i in range(0, len(pairs), ctx.settings.batch_size)]
        )
        for group in groups:
            _screen_group(ctx, screener, job_id, group, attempts)
    with ctx.sessions.begin() as s:
        return jobs.finalise_job(s, job_id)


def _screen_group(
    ctx: WorkerContext,
    screener: Screener,
    job_id: int,
    group: list[tuple[int, Source]],
    attempts: dict[int, int],
) -> None:
    ids = [i for i, _ in group]
    spent = [i for i in ids if attempts.get(i, 0) >= CRASH_LIMIT]
    if spent:
        with ctx.sessions.begin() as s:
            jobs.fail_items(
                s,
                spent,
                f"gave up: screening this image was cut short {CRASH_LIMIT} times "
                "(the worker died or hit the task time limit)",
            )
        group = [(i, src) for i, src in group if i not in spent]
        ids = [i for i, _ in group]
    if not group:
        return
    with ctx.sessions.begin() as s:
        jobs.change_attempts(s, ids, +1)
    try:
        outcomes = list(screener.screen([src for _, src in group]))
        with ctx.sessions.begin() as s:
            jobs.record_outcomes(s, list(zip(ids, outcomes, strict=True)))
            jobs.change_attempts(s, ids, -1)
    except Exception as exc:
        # A service failing (the database too, while the outcomes are recorded) is not the
        # images' fault: take the attempt back. Anything else counts against them, like a
        # crash would.
        if is_transient(exc):
            with ctx.sessions.begin() as s:
                jobs.change_attempts(s, ids, -1)
        raise
    for outcome in outcomes:
        if ctx.on_outcome:
            ctx.on_outcome(outcome)
        with log_context(image_id=outcome.image_id):
            log.info(
                "%s %s%s",
                outcome.uri,
                outcome.verdict or "failed",
                f": {outcome.why}" if outcome.why else "",
            )


def give_up(ctx: WorkerContext, job_id: int, item_ids: Sequence[int] | None, reason: str) -> None:
    """After the last retry: fail the chunk's pending items (or the whole job) with the
    reason, so the job ends instead of waiting forever."""
    with ctx.sessions.begin() as s:
        if item_ids is None:
            jobs.fail_job(s, job_id, reason)
        else:
            jobs.fail_items(s, item_ids, reason)
            jobs.finalise_job(s, job_id)
