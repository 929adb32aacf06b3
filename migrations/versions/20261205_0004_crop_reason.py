"""crop_rois.reason: why a crop is unsafe (its faces do not fit the aspect, or its blur is
over the limit), as qc screen prints it

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 15:00:00

Nullable: a safe crop has no reason, and rows written before this revision keep NULL.
SQLite (3.35 and later) adds and drops the column in place; the analyst views do not read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("crop_rois", sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("crop_rois", "reason")
