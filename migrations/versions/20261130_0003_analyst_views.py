"""analyst views (rejected frames, title summaries and thumbnails, vendor weekly rates,
verdict changes between model versions), their indexes, and the read-only qc_analyst role

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00

The views are the stable interface analysts query in SQL; ``docs/sql.md`` documents every
column and gives example queries (a test runs EXPLAIN on each of them against 100 000
seeded screenings and fails on a sequential scan of a large table).

Which screening a view shows, when an image was screened by several model versions:

* ``analyst_rejected_frames``, ``analyst_title_summary``, ``analyst_title_thumbnails``: the
  image's *current* screening, the one by the newest model version that screened it (the
  highest ``model_versions.id``);
* ``analyst_vendor_weekly``: every screening, the model version being a column;
* ``analyst_verdict_changes``: pairs of screenings of one image by two model versions.

The same SQL serves PostgreSQL and SQLite (``qc screen`` with no server) except the week
expression of ``analyst_vendor_weekly``. On PostgreSQL only: ``COMMENT ON VIEW`` and the role
``qc_analyst`` (NOLOGIN; CONNECT on the database, USAGE on schema public, SELECT on the
views and nothing else; the views run with their owner's rights, so the role needs nothing
on the tables). Roles belong to the whole cluster and many databases may run this revision
at once, so the role is created in a DO block that ignores "already exists"; downgrade
revokes what this revision granted and never drops the role (other databases use it).

SQLite note for later revisions: SQLite cannot rename a table that a view refers to once
the table it stands for is gone, so a batch ("move and copy") alteration of a table these
views read must drop the views first and create them again afterwards.

Frozen like 0001: the SQL is written out here, not built from the application's models.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "qc_analyst"

#: The image's current screening: no screening of it by a newer (higher id) model version.
_CURRENT = (
    "NOT EXISTS (SELECT 1 FROM screenings newer WHERE newer.image_id = {s}.image_id "
    "AND newer.model_version_id > {s}.model_version_id)"
)

#: Monday (UTC) of the week a screening was first written, as a date.
_WEEK = {
    "postgresql": "CAST(date_trunc('week', s.created_at AT TIME ZONE 'UTC') AS date)",
    # SQLite stores the UTC wall time; 'weekday 0' moves on to Sunday, -6 days is Monday.
    "sqlite": "date(s.created_at, 'weekday 0', '-6 days')",
}

_REJECTED_FRAMES = """
SELECT
    s.id AS screening_id,
    i.id AS image_id,
    i.uri AS image_uri,
    t.id AS title_id,
    t.external_id AS title_external_id,
    t.name AS title_name,
    i.video_id AS video_id,
    i.timestamp_s AS timestamp_s,
    i.frame_index AS frame_index,
    w.id AS worst_region_id,
    w.kind AS worst_region_kind,
    w.label AS worst_region_label,
    w.x0 AS worst_region_x0,
    w.y0 AS worst_region_y0,
    w.x1 AS worst_region_x1,
    w.y1 AS worst_region_y1,
    w.area_fraction AS worst_region_area_fraction,
    w.coverage AS worst_region_coverage,
    w.mean_probability AS worst_region_probability,
    w.mean_intensity AS worst_region_intensity,
    (SELECT count(*) FROM blur_regions f
      WHERE f.screening_id = s.id AND f.kind = 'face') AS face_regions,
    (SELECT max(f.coverage) FROM blur_regions f
      WHERE f.screening_id = s.id AND f.kind = 'face') AS face_blur_coverage,
    EXISTS (SELECT 1 FROM blur_regions f
      WHERE f.screening_id = s.id AND f.kind = 'face' AND f.verdict = 'blurred') AS face_blurred,
    s.overlay_uri AS overlay_uri,
    m.id AS model_version_id,
    m.name AS model_version_name,
    m.checksum AS model_version_checksum,
    s.updated_at AS screened_at
FROM screenings s
JOIN images i ON i.id = s.image_id
JOIN model_versions m ON m.id = s.model_version_id
LEFT JOIN titles t ON t.id = i.title_id
LEFT JOIN blur_regions w ON w.id = (
    SELECT r.id FROM blur_regions r
    WHERE r.screening_id = s.id AND r.verdict = 'blurred' AND r.kind <> 'grid'
    ORDER BY CASE r.kind WHEN 'face' THEN 0 WHEN 'foreground' THEN 1
                         WHEN 'component' THEN 2 ELSE 3 END,
             coalesce(r.coverage, 0) * coalesce(r.mean_probability, 0) DESC,
             coalesce(r.area_fraction, 0) DESC,
             r.id
    LIMIT 1)
WHERE s.verdict = 'reject'
  AND i.source_kind = 'frame'
  AND {current_s}
"""

_TITLE_SUMMARY = """
SELECT
    t.id AS title_id,
    t.external_id AS title_external_id,
    t.name AS title_name,
    count(i.id) AS frames,
    count(s.id) AS frames_screened,
    count(CASE WHEN s.verdict = 'reject' THEN 1 END) AS frames_rejected,
    count(CASE WHEN s.verdict = 'review' THEN 1 END) AS frames_review,
    count(CASE WHEN s.verdict = 'pass' THEN 1 END) AS frames_passed,
    count(CASE WHEN i.status = 'failed' THEN 1 END) AS frames_failed,
    max(s.updated_at) AS last_screened_at
FROM titles t
LEFT JOIN images i ON i.title_id = t.id AND i.source_kind = 'frame'
LEFT JOIN screenings s ON s.image_id = i.id AND {current_s}
GROUP BY t.id, t.external_id, t.name
"""

# external_id is in PARTITION BY (it changes nothing: one per title id) so that PostgreSQL
# pushes a filter on it down into the window's subquery.
_TITLE_THUMBNAILS = """
SELECT
    title_id, title_external_id, title_name, aspect, image_id, image_uri, timestamp_s,
    frame_index, screening_id, model_version_id, crop_roi_id, crop_x0, crop_y0, crop_x1,
    crop_y1, area_fraction, blur_fraction, keeps_faces
FROM (
    SELECT
        t.id AS title_id,
        t.external_id AS title_external_id,
        t.name AS title_name,
        r.aspect AS aspect,
        i.id AS image_id,
        i.uri AS image_uri,
        i.timestamp_s AS timestamp_s,
        i.frame_index AS frame_index,
        s.id AS screening_id,
        s.model_version_id AS model_version_id,
        r.id AS crop_roi_id,
        r.x0 AS crop_x0,
        r.y0 AS crop_y0,
        r.x1 AS crop_x1,
        r.y1 AS crop_y1,
        r.area_fraction AS area_fraction,
        r.blur_fraction AS blur_fraction,
        r.keeps_faces AS keeps_faces,
        row_number() OVER (
            PARTITION BY t.id, t.external_id, r.aspect
            ORDER BY coalesce(r.area_fraction, 0) DESC, coalesce(r.blur_fraction, 1),
                     r.id
        ) AS best
    FROM titles t
    JOIN images i ON i.title_id = t.id
    JOIN screenings s ON s.image_id = i.id
    JOIN crop_rois r ON r.screening_id = s.id
    WHERE i.source_kind = 'frame'
      AND s.verdict = 'pass'
      AND r.safe
      AND {current_s}
) ranked
WHERE best = 1
"""

_VENDOR_WEEKLY = """
SELECT
    i.vendor AS vendor,
    {week} AS week,
    m.id AS model_version_id,
    m.name AS model_version_name,
    count(*) AS screened,
    count(CASE WHEN s.verdict = 'reject' THEN 1 END) AS rejected,
    count(CASE WHEN s.verdict = 'review' THEN 1 END) AS review,
    count(CASE WHEN s.verdict = 'pass' THEN 1 END) AS passed,
    round(1.0 * count(CASE WHEN s.verdict = 'reject' THEN 1 END) / count(*), 4)
        AS rejection_rate
FROM images i
JOIN screenings s ON s.image_id = i.id
JOIN model_versions m ON m.id = s.model_version_id
WHERE i.vendor IS NOT NULL
GROUP BY i.vendor, {week}, m.id, m.name
"""

# images and titles are LEFT JOINed (every screening has its image) so that PostgreSQL
# leaves them out of a query that reads no column of theirs.
_VERDICT_CHANGES = """
SELECT
    a.image_id AS image_id,
    i.uri AS image_uri,
    i.source_kind AS source_kind,
    i.title_id AS title_id,
    t.external_id AS title_external_id,
    i.vendor AS vendor,
    i.timestamp_s AS timestamp_s,
    ma.id AS model_version_a_id,
    ma.name AS model_version_a_name,
    mb.id AS model_version_b_id,
    mb.name AS model_version_b_name,
    a.verdict AS verdict_a,
    b.verdict AS verdict_b,
    a.id AS screening_a_id,
    b.id AS screening_b_id,
    a.updated_at AS screened_a_at,
    b.updated_at AS screened_b_at
FROM screenings a
JOIN screenings b
  ON b.image_id = a.image_id
 AND b.model_version_id <> a.model_version_id
 AND b.verdict <> a.verdict
JOIN model_versions ma ON ma.id = a.model_version_id
JOIN model_versions mb ON mb.id = b.model_version_id
LEFT JOIN images i ON i.id = a.image_id
LEFT JOIN titles t ON t.id = i.title_id
"""

#: name -> (SELECT, comment); created in this order, dropped in the reverse.
VIEWS: dict[str, tuple[str, str]] = {
    "analyst_rejected_frames": (
        _REJECTED_FRAMES,
        (
            "Rejected video frames (current screening of each image), with title, timestamp, "
            "worst region, face blur, overlay and model version. See docs/sql.md."
        ),
    ),
    "analyst_title_summary": (
        _TITLE_SUMMARY,
        (
            "Per title: frames, screened, rejected, review, passed, failed to read "
            "(current screening of each frame). See docs/sql.md."
        ),
    ),
    "analyst_title_thumbnails": (
        _TITLE_THUMBNAILS,
        (
            "Per title and aspect ratio: the passed frame with the largest safe crop "
            "(current screening of each frame). See docs/sql.md."
        ),
    ),
    "analyst_vendor_weekly": (
        _VENDOR_WEEKLY,
        (
            "Per vendor, week (Monday, UTC) and model version: screened, rejected, review, "
            "passed, rejection rate. See docs/sql.md."
        ),
    ),
    "analyst_verdict_changes": (
        _VERDICT_CHANGES,
        ("Images whose verdict differs between model version A and model version B (both orders). See docs/sql.md."),
    ),
}

#: (name, table, columns) of the indexes the documented queries use.
INDEXES = (
    # rejected frames (and rescans) by when they were screened
    ("ix_screenings_updated_at", "screenings", ["updated_at"]),
    # verdict changes: one model version's (image, verdict) pairs from the index alone
    (
        "ix_screenings_model_version_id_image_id_verdict",
        "screenings",
        ["model_version_id", "image_id", "verdict"],
    ),
)

_CREATE_ROLE = f"""
DO $$
BEGIN
    CREATE ROLE {ROLE} NOLOGIN;
EXCEPTION
    -- made by another database's migration, maybe at this very moment (a concurrent
    -- CREATE ROLE waits for the other transaction, then fails with unique_violation)
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$
"""

_GRANT_CONNECT = f"""
DO $$
BEGIN
    EXECUTE 'GRANT CONNECT ON DATABASE ' || quote_ident(current_database()) || ' TO {ROLE}';
END
$$
"""

_REVOKE = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        EXECUTE 'REVOKE CONNECT ON DATABASE ' || quote_ident(current_database())
            || ' FROM {ROLE}';
        REVOKE USAGE ON SCHEMA public FROM {ROLE};
    END IF;
END
$$
"""


def _dialect() -> str:
    return op.get_context().dialect.name


def view_sql(name: str, dialect: str) -> str:
    """The SELECT of view ``name`` for ``dialect`` (postgresql or sqlite)."""
    select, _ = VIEWS[name]
    return select.format(current_s=_CURRENT.format(s="s"), week=_WEEK[dialect]).strip()


def upgrade() -> None:
    dialect = _dialect()
    if dialect not in _WEEK:
        raise RuntimeError(f"the analyst views are written for PostgreSQL and SQLite, not {dialect!r}")
    for name, table, columns in INDEXES:
        op.create_index(op.f(name), table, columns)
    for name, (_, comment) in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS\n{view_sql(name, dialect)}")
        if dialect == "postgresql":
            op.execute(f"COMMENT ON VIEW {name} IS '{comment}'")
    if dialect == "postgresql":
        op.execute(_CREATE_ROLE)
        op.execute(_GRANT_CONNECT)
        op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
        op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {ROLE}")


def downgrade() -> None:
    if _dialect() == "postgresql":
        op.execute(_REVOKE)
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    for name, table, _ in reversed(INDEXES):
        op.drop_index(op.f(name), table_name=table)
