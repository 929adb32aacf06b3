"""initial schema: titles, videos, jobs, images, model versions, screenings, regions, ROIs

Revision ID: 0001
Revises:
Create Date: 2026-11-30 08:00:00

Written by hand and checked against the ORM models (tests compare the migrated schema
with ``qc_worker.db.models`` through Alembic's autogenerate). Portable between PostgreSQL
and SQLite: enumerations are VARCHAR(32) + CHECK, JSON is JSON (JSONB on PostgreSQL),
timestamps are TIMESTAMP WITH TIME ZONE (UTC), surrogate keys BIGINT (INTEGER on SQLite).
This revision is frozen: it does not import the application's models or enumerations.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

URI = 2048
SHA256 = 64
KIND = 32

JOB_STATUSES = ("queued", "running", "done", "failed", "partially_failed")
IMAGE_STATUSES = ("ok", "failed")
VERDICTS = ("pass", "review", "reject")
REGION_VERDICTS = ("blurred", "sharp")


def _id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _pk() -> sa.Column:
    return sa.Column("id", _id(), autoincrement=True, nullable=False)


def _created_at() -> sa.Column:
    return sa.Column("created_at", _ts(), server_default=sa.func.now(), nullable=False)


def _updated_at() -> sa.Column:
    return sa.Column("updated_at", _ts(), server_default=sa.func.now(), nullable=False)


def _one_of(table: str, column: str, values: Sequence[str]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=op.f(f"ck_{table}_{column}"))


def _fk(column: str, table: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "titles",
        _pk(),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(1024), nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_titles")),
        sa.UniqueConstraint("external_id", name=op.f("uq_titles_external_id")),
    )

    op.create_table(
        "videos",
        _pk(),
        sa.Column("title_id", _id(), nullable=True),
        sa.Column("uri", sa.String(URI), nullable=False),
        sa.Column("sha256", sa.String(SHA256), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_videos")),
        _fk("title_id", "videos", "titles", "CASCADE"),
        sa.UniqueConstraint("uri", name=op.f("uq_videos_uri")),
    )
    op.create_index(op.f("ix_videos_title_id"), "videos", ["title_id"])

    op.create_table(
        "jobs",
        _pk(),
        sa.Column("kind", sa.String(KIND), nullable=False),
        sa.Column("status", sa.String(KIND), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("items_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items_failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=True),
        sa.Column("title_id", _id(), nullable=True),
        sa.Column("video_id", _id(), nullable=True),
        _created_at(),
        _updated_at(),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        _one_of("jobs", "status", JOB_STATUSES),
        _fk("title_id", "jobs", "titles", "SET NULL"),
        _fk("video_id", "jobs", "videos", "SET NULL"),
    )
    op.create_index(op.f("ix_jobs_status_created_at"), "jobs", ["status", "created_at"])
    op.create_index(op.f("ix_jobs_kind"), "jobs", ["kind"])
    op.create_index(op.f("ix_jobs_title_id"), "jobs", ["title_id"])
    op.create_index(op.f("ix_jobs_video_id"), "jobs", ["video_id"])

    op.create_table(
        "images",
        _pk(),
        sa.Column("uri", sa.String(URI), nullable=False),
        sa.Column("sha256", sa.String(SHA256), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("source_kind", sa.String(KIND), nullable=True),
        sa.Column("title_id", _id(), nullable=True),
        sa.Column("video_id", _id(), nullable=True),
        sa.Column("job_id", _id(), nullable=True),
        sa.Column("timestamp_s", sa.Float(), nullable=True),
        sa.Column("frame_index", sa.Integer(), nullable=True),
        sa.Column("vendor", sa.String(255), nullable=True),
        sa.Column("status", sa.String(KIND), server_default="ok", nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        _one_of("images", "status", IMAGE_STATUSES),
        _fk("title_id", "images", "titles", "SET NULL"),
        _fk("video_id", "images", "videos", "SET NULL"),
        _fk("job_id", "images", "jobs", "SET NULL"),
        sa.UniqueConstraint("uri", "sha256", name=op.f("uq_images_uri_sha256")),
    )
    # One hash-less row (bytes unreadable) per uri.
    op.create_index(
        op.f("uq_images_uri_no_sha256"),
        "images",
        ["uri"],
        unique=True,
        postgresql_where=sa.text("sha256 IS NULL"),
        sqlite_where=sa.text("sha256 IS NULL"),
    )
    op.create_index(op.f("ix_images_sha256"), "images", ["sha256"])
    op.create_index(op.f("ix_images_title_id"), "images", ["title_id"])
    op.create_index(op.f("ix_images_video_id"), "images", ["video_id"])
    op.create_index(op.f("ix_images_job_id"), "images", ["job_id"])
    op.create_index(op.f("ix_images_vendor"), "images", ["vendor"])
    op.create_index(op.f("ix_images_status"), "images", ["status"])

    op.create_table(
        "model_versions",
        _pk(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("checksum", sa.String(128), nullable=False),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("thresholds", _json(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("checksum", name=op.f("uq_model_versions_checksum")),
    )

    op.create_table(
        "screenings",
        _pk(),
        sa.Column("image_id", _id(), nullable=False),
        sa.Column("model_version_id", _id(), nullable=False),
        sa.Column("job_id", _id(), nullable=True),
        sa.Column("verdict", sa.String(KIND), nullable=False),
        sa.Column("scores", _json(), nullable=False),
        sa.Column("timings", _json(), nullable=False),
        sa.Column("overlay_uri", sa.String(URI), nullable=True),
        _created_at(),
        _updated_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screenings")),
        _one_of("screenings", "verdict", VERDICTS),
        _fk("image_id", "screenings", "images", "CASCADE"),
        _fk("model_version_id", "screenings", "model_versions", "RESTRICT"),
        _fk("job_id", "screenings", "jobs", "SET NULL"),
        sa.UniqueConstraint("image_id", "model_version_id", name=op.f("uq_screenings_image_id_model_version_id")),
    )
    op.create_index(
        op.f("ix_screenings_model_version_id_verdict"),
        "screenings",
        ["model_version_id", "verdict"],
    )
    op.create_index(op.f("ix_screenings_job_id"), "screenings", ["job_id"])
    op.create_index(op.f("ix_screenings_created_at"), "screenings", ["created_at"])

    op.create_table(
        "blur_regions",
        _pk(),
        sa.Column("screening_id", _id(), nullable=False),
        sa.Column("kind", sa.String(KIND), nullable=False),
        sa.Column("label", sa.String(255), nullable=True),
        sa.Column("x0", sa.Integer(), nullable=False),
        sa.Column("y0", sa.Integer(), nullable=False),
        sa.Column("x1", sa.Integer(), nullable=False),
        sa.Column("y1", sa.Integer(), nullable=False),
        sa.Column("area_fraction", sa.Float(), nullable=True),
        sa.Column("coverage", sa.Float(), nullable=True),
        sa.Column("mean_probability", sa.Float(), nullable=True),
        sa.Column("mean_intensity", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(KIND), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blur_regions")),
        _one_of("blur_regions", "verdict", REGION_VERDICTS),
        _fk("screening_id", "blur_regions", "screenings", "CASCADE"),
    )
    op.create_index(op.f("ix_blur_regions_screening_id"), "blur_regions", ["screening_id"])

    op.create_table(
        "crop_rois",
        _pk(),
        sa.Column("screening_id", _id(), nullable=False),
        sa.Column("aspect", sa.String(16), nullable=False),
        sa.Column("x0", sa.Integer(), nullable=False),
        sa.Column("y0", sa.Integer(), nullable=False),
        sa.Column("x1", sa.Integer(), nullable=False),
        sa.Column("y1", sa.Integer(), nullable=False),
        sa.Column("blur_fraction", sa.Float(), nullable=True),
        sa.Column("safe", sa.Boolean(), nullable=False),
        sa.Column("area_fraction", sa.Float(), nullable=True),
        sa.Column("keeps_faces", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crop_rois")),
        _fk("screening_id", "crop_rois", "screenings", "CASCADE"),
    )
    op.create_index(op.f("ix_crop_rois_screening_id"), "crop_rois", ["screening_id"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes and constraints.
    for table in (
        "crop_rois",
        "blur_regions",
        "screenings",
        "model_versions",
        "images",
        "jobs",
        "videos",
        "titles",
    ):
        op.drop_table(table)
