"""Mappings: desired state, seeks and reported status; batches ended early by their window.

Revision ID: 7a4c19e2d6b3
Revises: b3f1c2d4e5a6
Create Date: 2026-11-25 00:01:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7a4c19e2d6b3"
down_revision: str | Sequence[str] | None = "b3f1c2d4e5a6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mappings",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("function", sa.String(length=128), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("desired", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("seek_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("lag", sa.BigInteger(), nullable=True),
        sa.Column("iterator_age_ms", sa.BigInteger(), nullable=True),
        sa.Column("reported_by", sa.String(length=128), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mappings")),
    )
    op.create_table(
        "mapping_cuts",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("partition", sa.String(length=255), nullable=False),
        sa.Column("first_position", sa.String(length=64), nullable=False),
        sa.Column("last_position", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mapping", "partition", name=op.f("pk_mapping_cuts")),
    )


def downgrade() -> None:
    op.drop_table("mapping_cuts")
    op.drop_table("mappings")
