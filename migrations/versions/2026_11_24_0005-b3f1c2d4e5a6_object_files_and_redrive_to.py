"""Files seen by dir:// object notifications, and the target of a redrive in progress.

Revision ID: b3f1c2d4e5a6
Revises: 7ceab3ccff3c
Create Date: 2026-11-25 00:01:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b3f1c2d4e5a6"
down_revision: str | Sequence[str] | None = "7ceab3ccff3c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("redrive_to", sa.String(length=128), nullable=True))
    op.create_table(
        "object_files",
        sa.Column("notification", sa.String(length=64), nullable=False),
        sa.Column("path_hash", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("notification", "path_hash", name=op.f("pk_object_files")),
    )


def downgrade() -> None:
    op.drop_table("object_files")
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("redrive_to")
