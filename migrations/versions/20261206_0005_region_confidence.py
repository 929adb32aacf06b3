"""blur_regions.confidence: the face detector's confidence in a face region

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 19:45:00

A face region carries the confidence its detector gave it (MTCNN's O-Net probability, 1.0
for a Haar box or a box given by the caller); a blurred face rejects only when it is high
enough (``regions.face_reject_confidence``), so analysts need it beside the verdict.
Nullable: other regions have none, and rows written before this revision keep NULL. The
analyst views do not read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("blur_regions", sa.Column("confidence", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("blur_regions", "confidence")
