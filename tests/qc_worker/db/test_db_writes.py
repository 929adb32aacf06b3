"""Idempotent writes (qc_worker.db.writes) on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from qc_worker.db import (
    BlurRegion,
    CropRoi,
    Image,
    ImageStatus,
    Job,
    JobStatus,
    ModelVersion,
    Screening,
    Title,
    Verdict,
    Video,
    get_or_create_model_version,
    make_sessionmaker,
    record_image_failure,
    save_screening,
    session_scope,
    upsert_image,
)
from qc_worker.detector.regions import Region
from qc_worker.detector.roi import Roi
from qc_worker.values import ImageOrigin

SHA_A = "a" * 64
SHA_B = "b" * 64
CHECKSUM = "c0ffee" * 10 + "abcd"


def _count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model))


def _seed(engine: Engine) -> tuple[int, int]:
    """A model version and an image; their ids."""
    with session_scope(engine) as session:
        model = get_or_create_model_version(session, "smb-v1", CHECKSUM, {"miou": 0.6}, {"t": 0.5})
        image = upsert_image(session, "s3://art/title-1/frame-001.jpg", SHA_A, 1920, 1080, ImageOrigin("frame"))
        return image.id, model.id


def _region(**change: Any) -> Region:
    fields: dict[str, Any] = {
        "kind": "component",
        "label": "r",
        "bbox": (0, 0, 1, 1),
        "area_fraction": 0.01,
        "coverage": 0.5,
        "mean_probability": 0.8,
        "mean_intensity": 0.3,
        "verdict": "blurred",
    }
    return Region(**(fields | change))


def _regions(tag: str, n: int) -> list[Region]:
    return [
        _region(label=f"{tag}-{i}", bbox=(10 * i, 5, 10 * i + 8, 40), area_fraction=0.01 * (i + 1)) for i in range(n)
    ]


def _rois(n: int, safe: bool) -> list[Roi]:
    aspects = ["16:9", "2:3", "1:1", "4:3"]
    return [Roi(aspects[i], (0, 0, 100 + i, 50), 0.0, safe, 0.5, True) for i in range(n)]


# --- screenings --------------------------------------------------------------------------
def test_db_saving_twice_leaves_one_screening_with_the_second_results(engine: Engine) -> None:
    image_id, model_id = _seed(engine)
    with session_scope(engine) as session:
        first = save_screening(
            session,
            image_id,
            model_id,
            "reject",
            {"blur": 0.9},
            {"total_ms": 10.0},
            _regions("first", 3),
            _rois(4, safe=False),
        )
        first_id, first_created = first.id, first.created_at
        assert len(first.regions) == 3 and len(first.rois) == 4

    with session_scope(engine) as session:
        second = save_screening(
            session,
            image_id,
            model_id,
            Verdict.PASS,
            {"blur": 0.1},
            {"total_ms": 7.5},
            _regions("second", 1),
            _rois(2, safe=True),
        )
        assert [r.label for r in second.regions] == ["second-0"]

    with session_scope(engine) as session:
        assert _count(session, Screening) == 1
        screening = session.scalars(select(Screening)).one()
        assert screening.id == first_id
        assert screening.verdict is Verdict.PASS
        assert screening.scores == {"blur": 0.1}
        assert screening.timings == {"total_ms": 7.5}
        assert screening.created_at == first_created
        assert screening.updated_at >= first_created
        assert [r.label for r in screening.regions] == ["second-0"]
        assert [(r.aspect, r.safe) for r in screening.rois] == [("16:9", True), ("2:3", True)]
        assert _count(session, BlurRegion) == 1
        assert _count(session, CropRoi) == 2


def test_db_saving_twice_in_one_session_leaves_no_stale_objects(engine: Engine) -> None:
    image_id, model_id = _seed(engine)
    with session_scope(engine) as session:
        first = save_screening(session, image_id, model_id, "review", {}, {}, _regions("a", 2), _rois(1, False))
        assert len(first.regions) == 2
        second = save_screening(session, image_id, model_id, "pass", {}, {}, [], [])
        assert second is first  # the same row, refreshed
        assert second.regions == [] and second.rois == []
        assert session.scalars(select(BlurRegion)).all() == []
    with session_scope(engine) as session:
        assert _count(session, Screening) == 1
        assert _count(session, BlurRegion) == 0
        assert _count(session, CropRoi) == 0


def test_db_regions_and_rois_are_deleted_with_their_screening(engine: Engine) -> None:
    image_id, model_id = _seed(engine)
    with session_scope(engine) as session:
        screening = save_screening(session, image_id, model_id, "reject", {}, {}, _regions("x", 2), _rois(3, False))
        screening_id = screening.id
        other_model = get_or_create_model_version(session, "smb-v2", "d" * 64).id
        save_screening(session, image_id, other_model, "pass", {}, {}, _regions("y", 1), [])

    # ON DELETE CASCADE in the database itself, not the ORM: plain SQL.
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM screenings WHERE id = :id"), {"id": screening_id})
    with session_scope(engine) as session:
        assert _count(session, Screening) == 1
        assert [r.label for r in session.scalars(select(BlurRegion))] == ["y-0"]
        assert _count(session, CropRoi) == 0

    # Deleting the image takes its remaining screening and regions with it.
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM images WHERE id = :id"), {"id": image_id})
    with session_scope(engine) as session:
        assert _count(session, Screening) == 0
        assert _count(session, BlurRegion) == 0

    # Through the ORM too.
    image_id, model_id = _seed(engine)
    with session_scope(engine) as session:
        save_screening(session, image_id, model_id, "review", {}, {}, _regions("z", 2), _rois(1, True))
    with session_scope(engine) as session:
        session.delete(session.scalars(select(Screening)).one())
    with session_scope(engine) as session:
        assert _count(session, BlurRegion) == 0
        assert _count(session, CropRoi) == 0


def test_db_a_failed_save_writes_nothing_and_leaves_the_session_usable(engine: Engine) -> None:
    image_id, model_id = _seed(engine)
    with session_scope(engine) as session:
        with pytest.raises(IntegrityError):  # no such image: foreign keys are enforced
            save_screening(session, image_id + 1000, model_id, "pass", {}, {}, _regions("a", 1), [])
        screening = save_screening(session, image_id, model_id, "pass", {}, {}, [], _rois(1, True))
        assert screening.id is not None
    with session_scope(engine) as session:
        assert _count(session, Screening) == 1
        assert _count(session, BlurRegion) == 0
        assert _count(session, CropRoi) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"verdict": "maybe"}, "verdict must be one of pass, review, reject"),
        ({"regions": [_region(kind="face", verdict="pass")]}, "verdict must be one of blurred, sharp"),
        ({"regions": [_region(kind="face", bbox=(5, 5, 1, 9))]}, "x0 <= x1"),
        ({"regions": [_region(kind="colour")]}, "kind must be one of component, face, foreground, grid"),
        ({"regions": [_region(kind="face", bbox=(0, 0, 1.5, 1), verdict="sharp")]}, "whole number"),
        ({"regions": [_region(coverage=np.float32("nan"))]}, "coverage must be finite"),
        ({"rois": [Roi("16:9", (0, 0, 1, 1), 0.0, None, 1.0, True)]}, "safe is required"),
        ({"scores": {"blur": math.nan}}, "scores.blur must be finite"),
    ],
)
def test_db_bad_screening_input_is_refused_before_writing(engine: Engine, change: dict[str, Any], message: str) -> None:
    image_id, model_id = _seed(engine)
    arguments: dict[str, Any] = {
        "verdict": "pass",
        "scores": {},
        "timings": {},
        "regions": [],
        "rois": [],
    } | change
    with session_scope(engine) as session:
        with pytest.raises(ValueError, match=message):
            save_screening(session, image_id, model_id, **arguments)
    with session_scope(engine) as session:
        assert _count(session, Screening) == 0


# --- images ------------------------------------------------------------------------------
def test_db_upsert_image_is_keyed_by_uri_and_content(engine: Engine) -> None:
    with session_scope(engine) as session:
        title = Title(external_id="tt-1", name="A Title")
        session.add(title)
        session.flush()
        first = upsert_image(
            session,
            "s3://art/x.jpg",
            SHA_A.upper(),
            640,
            360,
            ImageOrigin("vendor", vendor="acme", title_id=title.id),
        )
        again = upsert_image(session, "s3://art/x.jpg", SHA_A, 640, 360, ImageOrigin("vendor"))
        assert again.id == first.id
        assert again.sha256 == SHA_A
        # Fields not given keep what is stored.
        assert again.vendor == "acme" and again.title_id == title.id
        # Same content elsewhere, or other content here: other rows.
        elsewhere = upsert_image(session, "s3://art/y.jpg", SHA_A, 640, 360, ImageOrigin("vendor"))
        changed = upsert_image(session, "s3://art/x.jpg", SHA_B, 640, 360, ImageOrigin("vendor"))
        assert len({first.id, elsewhere.id, changed.id}) == 3
    with session_scope(engine) as session:
        assert _count(session, Image) == 3


def test_db_a_failed_image_is_recorded_with_its_reason(engine: Engine) -> None:
    with session_scope(engine) as session:
        failed = record_image_failure(
            session,
            "s3://vendor/broken.png",
            "cannot decode: truncated PNG",
            origin=ImageOrigin("vendor", vendor="acme"),
        )
        failed_id = failed.id
        # Recording it again keeps one row, with the latest reason.
        again = record_image_failure(session, "s3://vendor/broken.png", "cannot decode: bad CRC")
        assert again.id == failed_id
    with session_scope(engine) as session:
        image = session.get(Image, failed_id)
        assert image.status is ImageStatus.FAILED
        assert image.failure_reason == "cannot decode: bad CRC"
        assert image.sha256 is None and image.width is None
        assert image.vendor == "acme"
        assert _count(session, Image) == 1
        assert (
            session.scalar(text("SELECT failure_reason FROM images WHERE status = 'failed'"))
            == "cannot decode: bad CRC"
        )

    with session_scope(engine) as session:
        # Readable bytes that would not decode: keyed by (uri, sha256) like any image...
        hashed = record_image_failure(
            session,
            "s3://vendor/huge.jpg",
            "too large: 20000x20000 px",
            SHA_B,
            width=20000,
            height=20000,
        )
        # ...so when the same content later validates, the same row becomes ok.
        fixed = upsert_image(session, "s3://vendor/huge.jpg", SHA_B, 20000, 20000, ImageOrigin("vendor"))
        assert fixed.id == hashed.id
        assert fixed.status is ImageStatus.OK and fixed.failure_reason is None

    with session_scope(engine) as session, pytest.raises(ValueError, match="reason"):
        record_image_failure(session, "s3://vendor/x.png", "  ")


# --- model versions ----------------------------------------------------------------------
def test_db_model_versions_are_unique_by_checksum(engine: Engine) -> None:
    with session_scope(engine) as session:
        first = get_or_create_model_version(session, "smb-v1", CHECKSUM, {"miou": 0.59}, {"t": 1})
        again = get_or_create_model_version(session, "renamed", CHECKSUM, {"miou": 0.1}, {})
        assert again.id == first.id
        assert (again.name, again.metrics, again.thresholds) == ("smb-v1", {"miou": 0.59}, {"t": 1})
        other = get_or_create_model_version(session, "smb-v2", "e" * 64)
        assert other.id != first.id and other.metrics == {} and other.thresholds == {}
    with session_scope(engine) as session:
        assert _count(session, ModelVersion) == 2
    # The database itself refuses a duplicate checksum.
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(ModelVersion(name="dup", checksum=CHECKSUM))
        session.flush()


# --- JSON, timestamps, the other tables --------------------------------------------------
def test_db_json_columns_round_trip(engine: Engine) -> None:
    scores = {
        "image": {"blur_probability": 0.8125, "faces": [0.1, 0.95], "n": 3},
        "flags": [True, False, None],
        "text": "flou de bougé — 모션 블러",
        "numpy": {"f32": np.float32(0.5), "i64": np.int64(7), "arr": np.array([[1, 2], [3, 4]])},
        "empty": {},
    }
    expected = dict(scores, numpy={"f32": 0.5, "i64": 7, "arr": [[1, 2], [3, 4]]})
    metrics = {"cuhk": {"miou": 0.5977, "f1": 0.7482}, "gopro": {"acc": 0.8968, "auc": 0.94}}
    thresholds = {"review": 0.25, "reject": 0.5, "face_weight": 2.0, "aspects": ["16:9", "1:1"]}
    timings = {"decode_ms": 1.25, "model_ms": 30.0, "total_ms": 40.125}
    with session_scope(engine) as session:
        model = get_or_create_model_version(session, "smb", CHECKSUM, metrics, thresholds)
        image = upsert_image(session, "local:/a.png", SHA_A, 10, 10, ImageOrigin("local"))
        screening_id = save_screening(session, image.id, model.id, "pass", scores, timings).id
        job = Job(kind="frames", payload={"titles": ["tt-1", "tt-2"], "interval_s": 2.5})
        session.add(job)
        session.flush()
        job_id = job.id
    with session_scope(engine) as session:  # a fresh session: values come from the database
        screening = session.get(Screening, screening_id)
        assert screening.scores == expected
        assert screening.timings == timings
        assert screening.model_version.metrics == metrics
        assert screening.model_version.thresholds == thresholds
        assert session.get(Job, job_id).payload == {"titles": ["tt-1", "tt-2"], "interval_s": 2.5}


def test_db_timestamps_are_timezone_aware_utc(engine: Engine) -> None:
    image_id, model_id = _seed(engine)
    before = datetime.now(UTC)
    with session_scope(engine) as session:
        screening_id = save_screening(session, image_id, model_id, "pass", {}, {}).id
        job = Job(kind="local", started_at=datetime.fromisoformat("2026-01-02T03:04:05+02:00"))
        session.add(job)
        session.flush()
        job_id = job.id
    with session_scope(engine) as session:
        screening = session.get(Screening, screening_id)
        for value in (screening.created_at, screening.updated_at, screening.image.created_at):
            assert value.tzinfo is not None and value.utcoffset().total_seconds() == 0
        assert abs((screening.created_at - before).total_seconds()) < 60
        job = session.get(Job, job_id)
        assert job.started_at == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)
        assert job.status is JobStatus.QUEUED and job.attempts == 0
    with pytest.raises(StatementError, match="naive datetime"), session_scope(engine) as session:
        session.add(Job(kind="local", started_at=datetime(2026, 1, 1)))
        session.flush()


def test_db_titles_videos_and_jobs_link_up(engine: Engine) -> None:
    with session_scope(engine) as session:
        title = Title(external_id="tt-9", name="Nine")
        video = Video(uri="s3://video/tt-9.mp4", title=title, duration_s=5400.0, fps=24.0)
        job = Job(kind="frames", title=title, video=video, status=JobStatus.RUNNING, items_total=3)
        session.add_all([title, video, job])
        session.flush()
        frame = upsert_image(
            session,
            "s3://art/tt-9/f1.jpg",
            SHA_A,
            1280,
            720,
            ImageOrigin(
                "frame", title_id=title.id, video_id=video.id, job_id=job.id, timestamp_s=61.5, frame_index=1476
            ),
        )
        frame_id, title_id = frame.id, title.id
    with engine.begin() as connection:  # the title goes: its video with it; the frame stays
        connection.execute(text("DELETE FROM titles WHERE id = :id"), {"id": title_id})
    with session_scope(engine) as session:
        frame = session.get(Image, frame_id)
        assert (frame.title_id, frame.video_id, frame.timestamp_s) == (None, None, 61.5)
        assert _count(session, Video) == 0
        assert session.scalars(select(Job)).one().video_id is None
    # The CHECK constraint refuses a status outside the enumeration.
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.execute(text("INSERT INTO jobs (kind, status, payload) VALUES ('x', 'nope', '{}')"))


# --- races ------------------------------------------------------------------------------
def _in_threads(n: int, work) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def test_db_concurrent_writes_of_one_key_leave_one_row(engine: Engine) -> None:
    image_id, model_id = _seed(engine)
    factory = make_sessionmaker(engine)
    n = 4

    def screen(i: int) -> None:
        with factory.begin() as session:
            save_screening(
                session,
                image_id,
                model_id,
                "review",
                {"worker": i},
                {},
                _regions(f"w{i}", i + 1),
                _rois(1 + i % 4, False),
            )

    def register(i: int) -> None:
        with factory.begin() as session:
            get_or_create_model_version(session, f"racer-{i}", "f" * 64)
            upsert_image(session, "s3://art/race.jpg", SHA_B, 100, 100, ImageOrigin("vendor"))
            record_image_failure(session, "s3://art/race-broken.jpg", f"worker {i}: bad bytes")

    _in_threads(n, screen)
    _in_threads(n, register)

    with session_scope(engine) as session:
        screening = session.scalars(select(Screening)).one()
        winner = screening.scores["worker"]
        assert [r.label for r in screening.regions] == [f"w{winner}-{k}" for k in range(winner + 1)]
        assert len(screening.rois) == 1 + winner % 4
        assert _count(session, BlurRegion) == winner + 1
        assert (
            session.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.checksum == "f" * 64)) == 1
        )
        assert session.scalar(select(func.count()).select_from(Image).where(Image.uri.like("s3://art/race%"))) == 2
