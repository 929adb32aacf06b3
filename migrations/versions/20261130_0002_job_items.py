"""job items: one row per image a queued job must screen, and what became of it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:30:00

A job's progress (counts, done / failed / partially failed) is computed from these rows
rather than kept in a counter that a retried task would bump twice. Frozen like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ITEM_STATUSES = ("pending", "screened", "failed")


def _id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    listed = ", ".join(f"'{v}'" for v in ITEM_STATUSES)
    op.create_table(
        "job_items",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("job_id", _id(), nullable=False),
        sa.Column("uri", sa.String(2048), nullable=False),
        sa.Column("status", sa.String(32), server_default="pending", nullable=False),
        sa.Column("image_id", _id(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("timestamp_s", sa.Float(), nullable=True),
        sa.Column("frame_index", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_items")),
        sa.CheckConstraint(f"status IN ({listed})", name=op.f("ck_job_items_status")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_items_job_id_jobs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_job_items_image_id_images"),
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("job_id", "uri", name=op.f("uq_job_items_job_id_uri")),
    )
    op.create_index(op.f("ix_job_items_job_id_status"), "job_items", ["job_id", "status"])
    op.create_index(op.f("ix_job_items_image_id"), "job_items", ["image_id"])


def downgrade() -> None:
    op.drop_table("job_items")
