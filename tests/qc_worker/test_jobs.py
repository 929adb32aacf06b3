"""Job bookkeeping on a migrated SQLite file: items, counts recomputed from the rows, a
job's end (done / partially failed / failed, and only once planned), and which images a
rescan must cover."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from qc_worker import jobs
from qc_worker.db.engine import make_engine, make_sessionmaker
from qc_worker.db.migrate import upgrade
from qc_worker.db.models import (
    Image,
    Job,
    JobItem,
    JobItemStatus,
    JobKind,
    JobStatus,
    Screening,
    utcnow,
)
from qc_worker.db.writes import (
    get_or_create_model_version,
    record_image_failure,
    save_screening,
    upsert_image,
)
from qc_worker.values import ImageOrigin, Outcome


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> bytes:
    """One migration per module; each test gets a copy of the migrated file."""
    path = tmp_path_factory.mktemp("jobs-db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path.read_bytes()


@pytest.fixture
def sessions(_template, tmp_path) -> Iterator[sessionmaker[Session]]:
    path = tmp_path / "qc.db"
    path.write_bytes(_template)
    engine = make_engine(f"sqlite:///{path}")
    yield make_sessionmaker(engine)
    engine.dispose()


def _job(sessions, uris=(), *, planned=False, kind=JobKind.VENDOR) -> int:
    with sessions.begin() as s:
        job_id = jobs.create_job(s, kind, {"vendor": "acme"}).id
        jobs.add_items(s, job_id, [{"uri": u} for u in uris])
        if planned:
            jobs.mark_planned(s, job_id)
    return job_id


def _set_items(sessions, job_id, statuses: dict[str, str]) -> None:
    with sessions.begin() as s:
        for uri, status in statuses.items():
            s.execute(
                update(JobItem)
                .where(JobItem.job_id == job_id, JobItem.uri == uri)
                .values(status=status, reason=None if status != "failed" else f"{uri} is broken")
            )


def _finalise(sessions, job_id) -> Job:
    with sessions.begin() as s:
        jobs.finalise_job(s, job_id)
    with sessions() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


@pytest.mark.parametrize(
    "statuses, expected, counts",
    [
        ({"a": "screened", "b": "screened"}, JobStatus.DONE, (2, 2, 0)),
        ({"a": "screened", "b": "failed"}, JobStatus.PARTIALLY_FAILED, (2, 1, 1)),
        ({"a": "failed", "b": "failed"}, JobStatus.FAILED, (2, 0, 2)),
    ],
)
def test_finalise_ends_a_planned_job_by_its_items(sessions, statuses, expected, counts):
    job_id = _job(sessions, statuses, planned=True)
    _set_items(sessions, job_id, statuses)
    job = _finalise(sessions, job_id)
    assert job.status == expected
    assert (job.items_total, job.items_done, job.items_failed) == counts
    assert job.finished_at is not None


def test_finalise_never_ends_a_job_with_pending_items(sessions):
    job_id = _job(sessions, ["a", "b", "c"], planned=True)
    _set_items(sessions, job_id, {"a": "screened", "b": "failed"})
    job = _finalise(sessions, job_id)
    assert job.status == JobStatus.RUNNING and job.finished_at is None
    assert (job.items_total, job.items_done, job.items_failed) == (3, 1, 1)


def test_finalise_never_ends_a_job_that_is_not_planned(sessions):
    """Items of a video still being sampled may all be screened before the last is added."""
    job_id = _job(sessions, ["a", "b"], planned=False)
    _set_items(sessions, job_id, {"a": "screened", "b": "screened"})
    job = _finalise(sessions, job_id)
    assert job.status == JobStatus.RUNNING and job.finished_at is None
    with sessions.begin() as s:
        jobs.mark_planned(s, job_id)
    assert _finalise(sessions, job_id).status == JobStatus.DONE


def test_a_planned_job_with_no_items_is_done(sessions):
    job_id = _job(sessions, [], planned=True)  # a rescan with nothing left to rescan
    job = _finalise(sessions, job_id)
    assert job.status == JobStatus.DONE and job.items_total == 0


def test_finalise_is_idempotent(sessions):
    job_id = _job(sessions, ["a", "b", "c"], planned=True)
    _set_items(sessions, job_id, {"a": "screened", "b": "failed", "c": "screened"})
    first = _finalise(sessions, job_id)
    for _ in range(5):
        again = _finalise(sessions, job_id)
        assert (
            again.status,
            again.items_total,
            again.items_done,
            again.items_failed,
            again.finished_at,
        ) == (
            first.status,
            first.items_total,
            first.items_done,
            first.items_failed,
            first.finished_at,
        )
    assert first.status == JobStatus.PARTIALLY_FAILED


def test_finalise_of_a_missing_job_is_none(sessions):
    with sessions.begin() as s:
        assert jobs.finalise_job(s, 12345) is None


def test_add_items_twice_leaves_one_item_and_keeps_its_state(sessions):
    job_id = _job(sessions, ["s3://b/a.jpg", "s3://b/b.jpg"])
    _set_items(sessions, job_id, {"s3://b/a.jpg": "screened"})
    with sessions.begin() as s:
        jobs.add_items(s, job_id, [{"uri": "s3://b/a.jpg"}, {"uri": "s3://b/b.jpg"}, {"uri": "s3://b/c.jpg"}])
        jobs.add_items(s, job_id, [{"uri": "s3://b/c.jpg", "timestamp_s": 1.5}])
    with sessions() as s:
        items = {i.uri: i for i in s.scalars(select(JobItem).where(JobItem.job_id == job_id))}
    assert sorted(items) == ["s3://b/a.jpg", "s3://b/b.jpg", "s3://b/c.jpg"]
    assert items["s3://b/a.jpg"].status == JobItemStatus.SCREENED  # not reset to pending
    assert items["s3://b/c.jpg"].timestamp_s is None  # the first insert wins
    # The same URI in another job is another item.
    other = _job(sessions, ["s3://b/a.jpg"])
    with sessions() as s:
        assert s.scalar(select(JobItem.status).where(JobItem.job_id == other)) == JobItemStatus.PENDING


def test_add_items_in_many_batches(sessions):
    job_id = _job(sessions, [f"u{i}" for i in range(2500)], planned=True)
    with sessions() as s:
        assert s.get(Job, job_id).items_total == 2500
        assert len(jobs.pending_item_ids(s, job_id)) == 2500


def test_mark_planned_keeps_the_payload_and_adds_facts(sessions):
    job_id = _job(sessions, ["a"])
    with sessions.begin() as s:
        jobs.mark_planned(s, job_id, sampling={"black": 2})
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job.payload == {"vendor": "acme", "sampling": {"black": 2}, "planned": True}
        assert job.items_total == 1


def test_fail_job_fails_pending_items_and_ends_the_job(sessions):
    job_id = _job(sessions, ["a", "b"])
    with sessions.begin() as s:
        jobs.fail_job(s, job_id, "video.mp4: the video holds no decodable frames")
    job = _finalise(sessions, job_id)
    assert job.status == JobStatus.FAILED and job.error == "video.mp4: the video holds no decodable frames"
    assert job.payload["planned"] is True and job.finished_at is not None
    with sessions() as s:
        reasons = set(s.scalars(select(JobItem.reason).where(JobItem.job_id == job_id)))
    assert reasons == {"video.mp4: the video holds no decodable frames"}


def test_fail_job_with_no_items_fails_the_job(sessions):
    job_id = _job(sessions)
    with sessions.begin() as s:
        jobs.fail_job(s, job_id, "could not queue the job")
    assert _finalise(sessions, job_id).status == JobStatus.FAILED


def test_fail_job_keeps_what_was_screened(sessions):
    job_id = _job(sessions, ["a", "b"])
    _set_items(sessions, job_id, {"a": "screened"})
    with sessions.begin() as s:
        jobs.fail_job(s, job_id, "gave up after 8 retries")
    job = _finalise(sessions, job_id)
    assert job.status == JobStatus.PARTIALLY_FAILED and (job.items_done, job.items_failed) == (1, 1)
    with sessions.begin() as s:
        jobs.fail_job(s, 999, "no such job")  # a missing job: nothing to do, no error


def test_fail_items_touches_only_pending_items(sessions):
    job_id = _job(sessions, ["a", "b", "c"], planned=True)
    _set_items(sessions, job_id, {"a": "screened"})
    with sessions() as s:
        ids = jobs.pending_item_ids(s, job_id)
        all_ids = list(s.scalars(select(JobItem.id).where(JobItem.job_id == job_id)))
    assert len(ids) == 2
    with sessions.begin() as s:
        jobs.fail_items(s, all_ids, "S3 unreachable")
        jobs.finalise_job(s, job_id)
    with sessions() as s:
        rows = dict(s.execute(select(JobItem.uri, JobItem.status).where(JobItem.job_id == job_id)).all())
    assert rows == {
        "a": JobItemStatus.SCREENED,
        "b": JobItemStatus.FAILED,
        "c": JobItemStatus.FAILED,
    }


def test_record_outcomes_and_sources_for(sessions):
    job_id = _job(sessions, ["s3://b/a.jpg", "s3://b/b.jpg", "s3://b/c.jpg"], planned=True)
    with sessions() as s:
        ids = jobs.pending_item_ids(s, job_id)
    with sessions.begin() as s:
        jobs.record_outcomes(
            s,
            [
                (ids[0], Outcome("s3://b/a.jpg", "screened", "pass")),
                (ids[1], Outcome("s3://b/b.jpg", "failed", reason="not an image")),
            ],
        )
    with sessions() as s:
        job = s.get(Job, job_id)
        pairs = jobs.sources_for(s, job, ids)
    # Only the still-pending item is offered again (a redelivered chunk does what is left).
    assert [(i, src.uri, src.origin.source_kind, src.origin.vendor, src.origin.job_id) for i, src in pairs] == [
        (ids[2], "s3://b/c.jpg", "vendor", "acme", job_id)
    ]
    job = _finalise(sessions, job_id)
    assert (job.status, job.items_done, job.items_failed) == (JobStatus.RUNNING, 1, 1)


def test_start_job_counts_attempts_and_runs_once(sessions):
    job_id = _job(sessions)
    with sessions.begin() as s:
        job = jobs.start_job(s, job_id)
        started = job.started_at
        assert job.status == JobStatus.RUNNING and job.attempts == 1
    with sessions.begin() as s:
        job = jobs.start_job(s, job_id)
        assert job.attempts == 2 and job.started_at == started
        assert jobs.start_job(s, 777) is None


def test_chunks():
    assert jobs.chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert jobs.chunks([], 3) == []


# --- rescans -------------------------------------------------------------------------------

SHA = [f"{i:064x}" for i in range(1, 10)]


def _screen(s: Session, image_id: int, model_id: int) -> Screening:
    return save_screening(s, image_id, model_id, "pass", {"score": 0.1}, {"detect": 0.01})


@pytest.fixture
def library(sessions):
    """Images: one screened by model A, one by model B, one by both (A long ago), one never
    screened, one that could not be decoded, and one recorded a month ago never screened."""
    with sessions.begin() as s:
        a = get_or_create_model_version(s, "a", "a" * 64).id
        b = get_or_create_model_version(s, "b", "b" * 64).id
        ids = {
            name: upsert_image(s, f"s3://b/{name}.jpg", SHA[i], 10, 10, ImageOrigin("vendor")).id
            for i, name in enumerate(["by_a", "by_b", "by_both", "never", "old_never"])
        }
        record_image_failure(s, "s3://b/broken.jpg", "not an image", SHA[8])
        _screen(s, ids["by_a"], a)
        _screen(s, ids["by_b"], b)
        _screen(s, ids["by_both"], b)
        old = _screen(s, ids["by_both"], a)
        s.execute(update(Screening).where(Screening.id == old.id).values(updated_at=utcnow() - timedelta(days=40)))
        s.execute(update(Image).where(Image.id == ids["old_never"]).values(created_at=utcnow() - timedelta(days=30)))
    return sessions, a, b


def _uris(found: list[str]) -> set[str]:
    return {u.removeprefix("s3://b/").removesuffix(".jpg") for u in found}


def test_rescan_covers_images_the_model_never_screened(library):
    sessions, a, b = library
    with sessions() as s:
        assert _uris(jobs.rescan_candidates(s, a)) == {"by_b", "never", "old_never"}
        assert _uris(jobs.rescan_candidates(s, b)) == {"by_a", "never", "old_never"}


def test_rescan_with_max_age_also_covers_old_screenings(library):
    sessions, a, _ = library
    with sessions() as s:
        assert _uris(jobs.rescan_candidates(s, a, max_age_days=30)) == {
            "by_b",
            "never",
            "old_never",
            "by_both",
        }
        assert _uris(jobs.rescan_candidates(s, a, max_age_days=60)) == {
            "by_b",
            "never",
            "old_never",
        }


def test_rescan_since_limits_to_recent_images(library):
    sessions, a, _ = library
    with sessions() as s:
        assert _uris(jobs.rescan_candidates(s, a, since=utcnow() - timedelta(days=1))) == {
            "by_b",
            "never",
        }
        assert _uris(jobs.rescan_candidates(s, a, since=utcnow() + timedelta(days=1))) == set()


def test_rescan_skips_failed_images_and_lists_each_uri_once(library):
    sessions, a, _ = library
    with sessions.begin() as s:
        # The same URI with new content: two image rows, one URI to rescan.
        upsert_image(s, "s3://b/never.jpg", SHA[7], 20, 20, ImageOrigin("vendor"))
    with sessions() as s:
        found = jobs.rescan_candidates(s, a)
    assert "s3://b/broken.jpg" not in found
    assert found.count("s3://b/never.jpg") == 1


def test_rescan_for_a_new_model_covers_every_readable_image(library):
    sessions, _, _ = library
    with sessions.begin() as s:
        c = get_or_create_model_version(s, "c", "c" * 64).id
    with sessions() as s:
        assert _uris(jobs.rescan_candidates(s, c)) == {
            "by_a",
            "by_b",
            "by_both",
            "never",
            "old_never",
        }


def test_job_summary(sessions):
    job_id = _job(sessions, ["a", "b"], planned=True)
    _set_items(sessions, job_id, {"a": "screened", "b": "failed"})
    _finalise(sessions, job_id)
    with sessions() as s:
        [one] = jobs.job_summary(s, job_id)
        listing = jobs.job_summary(s)
    assert (one["status"], one["total"], one["screened"], one["failed"], one["pending"]) == (
        "partially_failed",
        2,
        1,
        1,
        0,
    )
    assert one["failures"] == [{"uri": "b", "reason": "b is broken"}]
    assert [r["id"] for r in listing] == [job_id] and listing[0]["failures"] == []
