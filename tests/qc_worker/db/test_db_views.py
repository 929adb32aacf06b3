"""The analyst views (revision 0003, docs/sql.md) and the read-only role ``qc_analyst``.

* Each view returns exactly the expected rows of a small hand-made dataset, on SQLite and
  PostgreSQL, with the columns docs/sql.md lists.
* Every ```sql block of docs/sql.md runs against 100 000 seeded screenings on PostgreSQL,
  returns rows, and is planned without a sequential scan of a large table.
* A login role that is a member of ``qc_analyst`` can read the views and nothing else.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2.errors
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from qc_worker.db import migrate
from qc_worker.db.models import (
    BlurRegion,
    CropRoi,
    Image,
    ModelVersion,
    Screening,
    Title,
    Video,
)

from .conftest import TABLES

REPO_ROOT = Path(__file__).resolve().parents[3]
SQL_DOC = REPO_ROOT / "docs" / "sql.md"
VIEWS = (
    "analyst_rejected_frames",
    "analyst_title_summary",
    "analyst_title_thumbnails",
    "analyst_vendor_weekly",
    "analyst_verdict_changes",
)
ROLE = "qc_analyst"
#: Tables a documented query must never read with a sequential scan.
LARGE_TABLES = {"images", "screenings", "blur_regions", "crop_rois", "job_items"}


def _doc_sql_blocks() -> list[str]:
    """The ```sql blocks of docs/sql.md."""
    blocks = re.findall(r"^```sql\n(.*?)^```", SQL_DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
    assert blocks, f"no ```sql blocks in {SQL_DOC}"
    return blocks


def _doc_columns(view: str) -> list[str]:
    """The columns docs/sql.md lists for ``view``, in order (first cell of its table)."""
    text = SQL_DOC.read_text()
    match = re.search(rf"^## {view}\n(.*?)(?=^## |\Z)", text, flags=re.DOTALL | re.MULTILINE)
    assert match, f"docs/sql.md has no section '## {view}'"
    columns: list[str] = []
    for line in match.group(1).splitlines():
        cells = line.split("|")
        if len(cells) > 2 and line.startswith("| `"):
            columns += re.findall(r"`([a-z0-9_]+)`", cells[1])
    return columns


# --- the hand-made dataset ---------------------------------------------------------------


def _t(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def _region(kind: str, label: str, coverage: float, prob: float, area: float, verdict: str):
    return BlurRegion(
        kind=kind,
        label=label,
        x0=1,
        y0=2,
        x1=30,
        y1=40,
        area_fraction=area,
        coverage=coverage,
        mean_probability=prob,
        mean_intensity=0.5,
        verdict=verdict,
    )


def _crop(aspect: str, safe: bool, area: float, blur: float = 0.0) -> CropRoi:
    return CropRoi(
        aspect=aspect,
        x0=0,
        y0=0,
        x1=160,
        y1=90,
        blur_fraction=blur,
        safe=safe,
        area_fraction=area,
        keeps_faces=True,
    )


def _seed_small(engine: Engine) -> None:
    """Two model versions (A older, B newer), three titles, frames, vendor and catalog
    images; each comment says what the views must make of it."""
    with Session(engine) as s, s.begin():
        a = ModelVersion(id=1, name="model-a", checksum="a" * 64, metrics={}, thresholds={})
        b = ModelVersion(id=2, name="model-b", checksum="b" * 64, metrics={}, thresholds={})
        t1 = Title(id=1, external_id="tt1", name="One")
        t2 = Title(id=2, external_id="tt2", name="Two")
        t3 = Title(id=3, external_id="tt3", name="Three")  # no frames: zeros
        s.add_all([a, b, t1, t2, t3])
        s.flush()
        v1 = Video(id=1, title_id=1, uri="s3://v/1.mp4")
        v2 = Video(id=2, title_id=2, uri="s3://v/2.mp4")
        s.add_all([v1, v2])
        s.flush()

        def image(
            i: int,
            uri: str,
            kind: str,
            title: int | None = None,
            ts: float | None = None,
            vendor: str | None = None,
            status: str = "ok",
        ) -> None:
            s.add(
                Image(
                    id=i,
                    uri=uri,
                    sha256=None if status == "failed" else f"{i:064x}",
                    width=1920,
                    height=1080,
                    source_kind=kind,
                    title_id=title,
                    video_id=title if kind == "frame" else None,
                    timestamp_s=ts,
                    frame_index=None if ts is None else int(ts * 24),
                    vendor=vendor,
                    status=status,
                    failure_reason="truncated" if status == "failed" else None,
                )
            )

        image(1, "f1", "frame", 1, 10.0)
        image(2, "f2", "frame", 1, 20.0)
        image(3, "f3", "frame", 1, 30.0)
        image(4, "f4", "frame", 1, 40.0)
        image(5, "f5", "frame", 1, 50.0, status="failed")  # could not be read
        image(6, "f6", "frame", 1, 60.0)  # not screened yet
        image(7, "f7", "frame", 2, 5.0)
        image(8, "f8", "frame", 2, 6.0)
        image(9, "vendor-1", "vendor", vendor="acme")
        image(10, "vendor-2", "vendor", vendor="acme")
        image(11, "vendor-3", "vendor", vendor="globex")
        image(12, "catalog-1", "catalog", 1)  # not a frame: in no frame view
        s.flush()

        def screening(
            i: int,
            image_id: int,
            mv: int,
            verdict: str,
            created: datetime,
            updated: datetime | None = None,
            regions=(),
            rois=(),
        ) -> None:
            s.add(
                Screening(
                    id=i,
                    image_id=image_id,
                    model_version_id=mv,
                    verdict=verdict,
                    scores={},
                    timings={},
                    overlay_uri=f"overlay-{i}",
                    created_at=created,
                    updated_at=updated or created,
                    regions=list(regions),
                    rois=list(rois),
                )
            )

        # f1: rejected by A and by B; B is current. Worst: the blurred face, although the
        # foreground scores higher and a grid cell higher still (faces first, no grid).
        a_face = _region("face", "a-face", 0.9, 0.9, 0.1, "blurred")
        screening(1, 1, 1, "reject", _t(2), regions=[a_face])
        screening(
            2,
            1,
            2,
            "reject",
            _t(10),
            _t(11),
            regions=[
                _region("face", "face 1", 0.7, 0.6, 0.02, "blurred"),
                _region("face", "face 2", 0.1, 0.2, 0.02, "sharp"),
                _region("foreground", "foreground", 0.9, 0.9, 0.4, "blurred"),
                _region("component", "component 1", 1.0, 0.95, 0.2, "blurred"),
                _region("grid", "cell 0,0", 1.0, 0.99, 0.11, "blurred"),
            ],
        )
        # f2: rejected by A, never screened by B: A's verdict stands. Worst: the highest
        # coverage * probability (0.8), and of the two that tie, the larger area.
        screening(
            3,
            2,
            1,
            "reject",
            _t(3),
            regions=[
                _region("component", "c1", 1.0, 0.6, 0.10, "blurred"),
                _region("component", "c2", 1.0, 0.8, 0.05, "blurred"),
                _region("component", "c3", 1.0, 0.8, 0.07, "blurred"),
                _region("grid", "cell 1,1", 0.2, 0.3, 0.11, "sharp"),
            ],
        )
        # f3: rejected by A, passed by B: not a rejected frame any more.
        screening(4, 3, 1, "reject", _t(3))
        screening(
            5,
            3,
            2,
            "pass",
            _t(10),
            rois=[
                _crop("16:9", True, 0.5),
                _crop("1:1", True, 0.3),
                _crop("4:3", False, 0.9),
                _crop("2:3", True, 0.5, blur=0.02),
            ],
        )
        # f4: review by A (whose 1:1 crop is the largest, but A is not current), pass by B.
        screening(6, 4, 1, "review", _t(3), rois=[_crop("1:1", True, 0.95)])
        screening(
            7,
            4,
            2,
            "pass",
            _t(12),
            rois=[
                _crop("16:9", True, 0.6),
                _crop("1:1", False, 0.8),
                _crop("4:3", True, 0.4),
                _crop("2:3", True, 0.5, blur=0.01),
            ],
        )
        # f7: review by B, with a safe crop: a review frame is no thumbnail.
        screening(8, 7, 2, "review", _t(13), rois=[_crop("16:9", True, 0.7)])
        # f8: rejected by B with no regions at all.
        screening(9, 8, 2, "reject", _t(14))
        # Vendor submissions. 2026-11-02 and 2026-11-09 are Mondays.
        screening(10, 9, 1, "pass", _t(2))
        screening(11, 9, 2, "reject", _t(10))
        screening(12, 10, 1, "reject", _t(4))
        screening(13, 10, 2, "reject", _t(10))
        screening(14, 11, 1, "review", _t(8, 23))  # Sunday: still the week of the 2nd
        screening(15, 11, 2, "pass", _t(9, 0), _t(20))  # counted in its first week
        # catalog-1: rejected, but not a frame.
        screening(16, 12, 2, "reject", _t(10))


def _when(value: Any) -> datetime | None:
    """A timestamp from either backend as an aware UTC datetime (SQLite gives text)."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _rows(engine: Engine, view: str, order: str) -> tuple[list[str], list[dict[str, Any]]]:
    with engine.connect() as connection:
        result = connection.exec_driver_sql(f"SELECT * FROM {view} ORDER BY {order}")
        return list(result.keys()), [dict(row._mapping) for row in result]


def _pick(rows: list[dict[str, Any]], *columns: str) -> list[tuple]:
    return [tuple(row[c] for c in columns) for row in rows]


def test_db_views_return_the_expected_rows(engine: Engine) -> None:
    _seed_small(engine)

    # --- rejected frames: f1 (B), f2 (A), f8 (B); not f3 (B passed it), not catalog-1
    columns, rows = _rows(engine, "analyst_rejected_frames", "image_id")
    assert columns == _doc_columns("analyst_rejected_frames")
    assert _pick(
        rows,
        "image_uri",
        "screening_id",
        "title_external_id",
        "title_name",
        "video_id",
        "timestamp_s",
        "frame_index",
        "model_version_name",
        "model_version_checksum",
        "overlay_uri",
    ) == [
        ("f1", 2, "tt1", "One", 1, 10.0, 240, "model-b", "b" * 64, "overlay-2"),
        ("f2", 3, "tt1", "One", 1, 20.0, 480, "model-a", "a" * 64, "overlay-3"),
        ("f8", 9, "tt2", "Two", 2, 6.0, 144, "model-b", "b" * 64, "overlay-9"),
    ]
    assert _pick(
        rows,
        "worst_region_kind",
        "worst_region_label",
        "worst_region_coverage",
        "worst_region_probability",
        "worst_region_area_fraction",
    ) == [
        ("face", "face 1", 0.7, 0.6, 0.02),
        ("component", "c3", 1.0, 0.8, 0.07),
        (None, None, None, None, None),
    ]
    assert _pick(
        rows,
        "worst_region_x0",
        "worst_region_y0",
        "worst_region_x1",
        "worst_region_y1",
        "worst_region_intensity",
    )[0] == (1, 2, 30, 40, 0.5)
    faces = [(r["face_regions"], r["face_blur_coverage"], bool(r["face_blurred"])) for r in rows]
    assert faces == [(2, 0.7, True), (0, None, False), (0, None, False)]
    assert [_when(r["screened_at"]) for r in rows] == [_t(11), _t(3), _t(14)]

    # --- per-title summary
    columns, rows = _rows(engine, "analyst_title_summary", "title_id")
    assert columns == _doc_columns("analyst_title_summary")
    assert _pick(
        rows,
        "title_external_id",
        "title_name",
        "frames",
        "frames_screened",
        "frames_rejected",
        "frames_review",
        "frames_passed",
        "frames_failed",
    ) == [
        ("tt1", "One", 6, 4, 2, 0, 2, 1),
        ("tt2", "Two", 2, 2, 1, 1, 0, 0),
        ("tt3", "Three", 0, 0, 0, 0, 0, 0),
    ]
    assert [_when(r["last_screened_at"]) for r in rows] == [_t(12), _t(14), None]

    # --- best safe thumbnail per title and aspect: only tt1 has passed frames
    columns, rows = _rows(engine, "analyst_title_thumbnails", "title_id")
    rows.sort(key=lambda r: (r["title_id"], r["aspect"]))  # in code points, whatever collation
    assert columns == _doc_columns("analyst_title_thumbnails")
    assert _pick(
        rows,
        "title_external_id",
        "aspect",
        "image_uri",
        "screening_id",
        "model_version_id",
        "area_fraction",
        "blur_fraction",
    ) == [
        ("tt1", "16:9", "f4", 7, 2, 0.6, 0.0),
        ("tt1", "1:1", "f3", 5, 2, 0.3, 0.0),
        ("tt1", "2:3", "f4", 7, 2, 0.5, 0.01),  # ties on area: the less blurred
        ("tt1", "4:3", "f4", 7, 2, 0.4, 0.0),
    ]
    assert _pick(rows, "crop_x0", "crop_y0", "crop_x1", "crop_y1", "timestamp_s", "frame_index")[0] == (
        0,
        0,
        160,
        90,
        40.0,
        960,
    )
    assert all(bool(r["keeps_faces"]) for r in rows)

    # --- vendor weekly: every screening, week of its first writing, per model version
    columns, rows = _rows(engine, "analyst_vendor_weekly", "vendor, week, model_version_id")
    assert columns == _doc_columns("analyst_vendor_weekly")
    assert [
        (
            r["vendor"],
            str(r["week"]),
            r["model_version_name"],
            r["screened"],
            r["rejected"],
            r["review"],
            r["passed"],
            float(r["rejection_rate"]),
        )
        for r in rows
    ] == [
        ("acme", "2026-11-02", "model-a", 2, 1, 0, 1, 0.5),
        ("acme", "2026-11-09", "model-b", 2, 2, 0, 0, 1.0),
        ("globex", "2026-11-02", "model-a", 1, 0, 1, 0, 0.0),
        ("globex", "2026-11-09", "model-b", 1, 0, 0, 1, 0.0),
    ]
    if engine.dialect.name == "postgresql":
        assert isinstance(rows[0]["week"], date) and isinstance(rows[0]["rejection_rate"], Decimal)

    # --- verdict changes, both orders of the two model versions
    columns, rows = _rows(engine, "analyst_verdict_changes", "model_version_a_id, image_id")
    assert columns == _doc_columns("analyst_verdict_changes")
    changes = [
        ("f3", "tt1", None, "reject", "pass"),
        ("f4", "tt1", None, "review", "pass"),
        ("vendor-1", None, "acme", "pass", "reject"),
        ("vendor-3", None, "globex", "review", "pass"),
    ]
    assert _pick(rows, "model_version_a_name", "model_version_b_name") == (
        [("model-a", "model-b")] * 4 + [("model-b", "model-a")] * 4
    )
    assert _pick(rows, "image_uri", "title_external_id", "vendor", "verdict_a", "verdict_b") == (
        changes + [(uri, title, vendor, b, a) for uri, title, vendor, a, b in changes]
    )
    first = rows[0]
    assert (
        first["screening_a_id"],
        first["screening_b_id"],
        first["source_kind"],
        first["model_version_a_id"],
        first["model_version_b_id"],
    ) == (4, 5, "frame", 1, 2)
    assert (_when(first["screened_a_at"]), _when(first["screened_b_at"])) == (_t(3), _t(10))


# --- PostgreSQL: the documented queries at scale -----------------------------------------

#: 3 000 titles of 16 frames (every 96th unreadable), 2 500 vendor submissions from five
#: vendors of different sizes, every readable image screened by two model versions
#: (100 000 screenings; the newer one changes about 1 verdict in 20), a blur component and
#: a grid cell per screening, a face in a third, the foreground in half (283 000 regions),
#: one crop per aspect ratio (400 000 crops). The values docs/sql.md uses exist here.
SEED_SQL = """
INSERT INTO model_versions (id, name, checksum, metrics, thresholds) VALUES
  (1, 'resnet18-unet-0cc175b9c0f1', '0cc175b9c0f1b6a831c399e269772661' || repeat('0', 32),
   '{}', '{}'),
  (2, 'resnet18-unet-92eb5ffee6ae', '92eb5ffee6ae2fec3ad71c777531578f' || repeat('0', 32),
   '{}', '{}');

INSERT INTO titles (id, external_id, name)
SELECT n, 'tt' || lpad(n::text, 7, '0'), 'Title ' || n FROM generate_series(1, 3000) n;

INSERT INTO videos (id, title_id, uri, duration_s, fps, width, height)
SELECT n, n, 's3://qc-videos/tt' || lpad(n::text, 7, '0') || '.mp4', 5400, 24, 1920, 1080
FROM generate_series(1, 3000) n;

INSERT INTO images (id, uri, sha256, width, height, source_kind, title_id, video_id,
                    timestamp_s, frame_index, status, failure_reason, created_at, updated_at)
SELECT n, 's3://qc-frames/' || t || '/' || f || '.jpg',
       CASE WHEN n % 96 = 0 THEN NULL ELSE md5(n::text) || md5(t::text) END,
       1920, 1080, 'frame', t, t, f * 300.0 + 12.5, f * 7200 + 300,
       CASE WHEN n % 96 = 0 THEN 'failed' ELSE 'ok' END,
       CASE WHEN n % 96 = 0 THEN 'truncated JPEG' END,
       ts, ts
FROM generate_series(1, 48000) n,
     LATERAL (SELECT (n - 1) / 16 + 1 AS t, (n - 1) % 16 AS f,
                     TIMESTAMPTZ '2026-06-01 00:00+00' + n * interval '270 seconds' AS ts) x;

INSERT INTO images (id, uri, sha256, width, height, source_kind, vendor, status, created_at,
                    updated_at)
SELECT n, 's3://qc-vendor/' || v || '/' || n || '.png', md5(n::text) || md5(v), 2000, 3000,
       'vendor', v, 'ok', ts, ts
FROM generate_series(48001, 50500) n,
     LATERAL (SELECT (ARRAY['acme', 'acme', 'acme', 'globex', 'globex', 'initech',
                            'umbrella', 'hooli'])[1 + n % 8] AS v,
                     TIMESTAMPTZ '2026-06-01 00:00+00'
                       + (n - 48000) * interval '85 minutes' AS ts) x;

INSERT INTO screenings (id, image_id, model_version_id, verdict, scores, timings, overlay_uri,
                        created_at, updated_at)
SELECT i.id * 2 + m - 2, i.id, m,
       CASE WHEN h < 8 THEN 'reject' WHEN h < 20 THEN 'review' ELSE 'pass' END,
       '{}', '{}', 's3://qc-overlays/' || i.id || '-' || m || '.png', ts, ts
FROM images i, generate_series(1, 2) m,
     LATERAL (SELECT (i.id * 37 + i.id / 100) % 100 AS h1) h1,
     LATERAL (SELECT CASE WHEN m = 2 AND i.id % 13 = 0 THEN (h1 * 7 + 3) % 25 ELSE h1 END AS h,
                     CASE WHEN m = 1 THEN i.created_at + interval '1 minute'
                          ELSE TIMESTAMPTZ '2026-11-01 00:00+00' + i.id * interval '45 seconds'
                     END AS ts) x
WHERE i.status = 'ok';

INSERT INTO blur_regions (screening_id, kind, label, x0, y0, x1, y1, area_fraction, coverage,
                          mean_probability, mean_intensity, verdict)
SELECT s.id, k.kind, k.kind || ' ' || k.n, 100 * k.n, 80, 100 * k.n + 400, 600,
       0.05 * k.n, cov, 0.3 + 0.6 * cov, 0.4,
       CASE WHEN k.kind = 'component' OR cov >= 0.5 THEN 'blurred' ELSE 'sharp' END
FROM screenings s,
     LATERAL (VALUES ('component', 1), ('face', 2), ('foreground', 3), ('grid', 4)) k(kind, n),
     LATERAL (SELECT CASE WHEN s.verdict = 'reject' THEN 0.55 + ((s.id + k.n) % 40) / 100.0
                          ELSE ((s.id * 3 + k.n) % 50) / 100.0 END AS cov) c
WHERE k.kind IN ('component', 'grid')
   OR (k.kind = 'face' AND s.id % 3 = 0)
   OR (k.kind = 'foreground' AND s.id % 2 = 0);

INSERT INTO crop_rois (screening_id, aspect, x0, y0, x1, y1, blur_fraction, safe,
                       area_fraction, keeps_faces)
SELECT s.id, a.aspect, 0, 0, 1600, 900, b, b <= 0.05, 0.4 + ((s.id * 13 + a.n) % 60) / 100.0,
       true
FROM screenings s,
     LATERAL (VALUES ('16:9', 1), ('4:3', 2), ('1:1', 3), ('2:3', 4)) a(aspect, n),
     LATERAL (SELECT ((s.id * 7 + a.n) % 10) / 100.0 AS b) x;
"""


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.fixture(scope="module")
def seeded_pg_url(pg_databases: tuple[Callable[[], str], Callable[[str], None]]) -> Iterator[str]:
    """A PostgreSQL database of its own, migrated, seeded with SEED_SQL, vacuumed and
    analysed (what autovacuum does to a table after a bulk load)."""
    create, drop = pg_databases
    url = create()
    started = time.perf_counter()
    migrate.upgrade(url)
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.execute(SEED_SQL)
                cursor.execute("VACUUM ANALYZE")
        finally:
            raw.close()
    finally:
        engine.dispose()
    print(f"\nseeded 100 000 screenings in {time.perf_counter() - started:.1f} s")
    yield url
    drop(url)


@pytest.mark.integration
def test_db_documented_queries_run_on_indexes(seeded_pg_url: str) -> None:
    engine = create_engine(seeded_pg_url, poolclass=NullPool)
    started = time.perf_counter()
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM screenings").scalar() == 100_000
            problems = []
            for block in _doc_sql_blocks():
                plan = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {block}").scalar()
                scans = sorted(
                    {
                        node["Relation Name"]
                        for node in _plan_nodes(plan[0]["Plan"])
                        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in LARGE_TABLES
                    }
                )
                if scans:
                    problems.append(f"sequential scan of {', '.join(scans)} in:\n{block}")
                if not connection.exec_driver_sql(block).fetchall():
                    problems.append(f"no rows from (the seed lacks its values?):\n{block}")
    finally:
        engine.dispose()
    print(f"explained and ran the examples in {time.perf_counter() - started:.2f} s")
    assert not problems, "\n\n".join(problems)


# --- PostgreSQL: the read-only role ------------------------------------------------------


def _insufficient_privilege(connection, statement: str) -> None:
    with pytest.raises(DBAPIError) as caught:
        connection.exec_driver_sql(statement)
    assert isinstance(caught.value.orig, psycopg2.errors.InsufficientPrivilege), statement


@pytest.mark.integration
def test_db_analyst_role_reads_the_views_and_nothing_else(migrated_pg_url: str) -> None:
    login = f"qc_analyst_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(migrated_pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    analyst_url = make_url(migrated_pg_url).set(username=login)
    analyst = create_engine(analyst_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE ROLE {login} LOGIN IN ROLE {ROLE}")
            # CONNECT is granted to the role itself, not only through PUBLIC.
            assert (
                connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a "
                    "WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT' "
                    f"AND a.grantee = '{ROLE}'::regrole"
                ).scalar()
                == 1
            )
        with analyst.connect() as connection:
            assert connection.exec_driver_sql("SELECT current_user").scalar() == login
            for view in VIEWS:
                connection.exec_driver_sql(f"SELECT * FROM {view} LIMIT 1").fetchall()
                for privilege in (
                    "INSERT",
                    "UPDATE",
                    "DELETE",
                    "TRUNCATE",
                    "REFERENCES",
                    "TRIGGER",
                ):
                    assert not connection.exec_driver_sql(
                        f"SELECT has_table_privilege('{view}', '{privilege}')"
                    ).scalar(), (view, privilege)
            for table in [*TABLES, "alembic_version"]:
                _insufficient_privilege(connection, f"SELECT * FROM {table} LIMIT 1")
            for statement in (
                "INSERT INTO titles (external_id) VALUES ('x')",
                (
                    "INSERT INTO screenings (image_id, model_version_id, verdict, scores, "
                    "timings) VALUES (1, 1, 'pass', '{}', '{}')"
                ),
                "UPDATE screenings SET verdict = 'pass'",
                "UPDATE images SET vendor = 'x'",
                "DELETE FROM images",
                "DELETE FROM blur_regions",
                "TRUNCATE crop_rois",
                "CREATE TABLE analyst_scratch (x integer)",
                "CREATE VIEW analyst_scratch AS SELECT 1 AS x",
            ):
                _insufficient_privilege(connection, statement)
    finally:
        analyst.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {login}")
        admin.dispose()


@pytest.mark.integration
def test_db_downgrade_revokes_the_grants_and_keeps_the_role(
    pg_databases: tuple[Callable[[], str], Callable[[str], None]],
) -> None:
    create, drop = pg_databases
    url = create()
    engine = create_engine(url, poolclass=NullPool)

    def grants() -> tuple[bool, bool, int]:
        with engine.connect() as connection:
            return connection.exec_driver_sql(
                "SELECT "
                "EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname "
                f"= current_database() AND a.grantee = '{ROLE}'::regrole), "
                "EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname "
                f"= 'public' AND a.grantee = '{ROLE}'::regrole AND a.privilege_type = 'USAGE'), "
                "(SELECT count(*) FROM information_schema.role_table_grants "
                f"WHERE grantee = '{ROLE}')"
            ).one()

    try:
        migrate.upgrade(url)
        assert grants() == (True, True, len(VIEWS))
        migrate.downgrade(url, "0002")  # below revision 0003, which made the views and grants
        assert grants() == (False, False, 0)
        # The role stays (other databases use it), and upgrading again finds it there.
        migrate.upgrade(url)
        assert grants() == (True, True, len(VIEWS))
    finally:
        engine.dispose()
        drop(url)


def _migration_module():
    path = REPO_ROOT / "migrations" / "versions" / "20261130_0003_analyst_views.py"
    spec = importlib.util.spec_from_file_location("analyst_views_migration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # only defines names; needs no Alembic context
    return module


@pytest.mark.integration
def test_db_role_creation_survives_a_concurrent_migration(pg_admin: Engine) -> None:
    """Two databases migrating at once both create the role: the second waits for the
    first and must then carry on, not fail. Tried with a throwaway role name (the real one
    exists already, and dropping it would break other databases)."""
    name = f"qc_analyst_race_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    block = _migration_module()._CREATE_ROLE.replace(ROLE, name)
    assert f"CREATE ROLE {name} NOLOGIN" in block
    engine = create_engine(pg_admin.url, poolclass=NullPool)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(block)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=second)
    try:
        with engine.connect() as first:
            first.exec_driver_sql(block)  # inside an open transaction, not committed
            thread.start()
            deadline = time.monotonic() + 30
            with pg_admin.connect() as watcher:
                while not watcher.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    f"AND strpos(query, 'CREATE ROLE {name} NOLOGIN') > 0"
                ).scalar():
                    assert time.monotonic() < deadline, "the second CREATE ROLE never waited"
                    assert thread.is_alive(), errors
                    time.sleep(0.05)
            first.commit()
            thread.join(30)
            assert not thread.is_alive()
        assert errors == []
        with engine.begin() as connection:
            connection.exec_driver_sql(block)  # and once more, the role long there
    finally:
        if thread.ident is not None:
            thread.join(30)  # it may still create the role after a failure above
        with pg_admin.connect() as connection:
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")
        engine.dispose()
