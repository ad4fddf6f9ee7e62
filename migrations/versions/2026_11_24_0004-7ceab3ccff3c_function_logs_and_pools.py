"""Function logs on attempts, and the live figures of process pools.

Revision ID: 7ceab3ccff3c
Revises: 5ce0d3a1f2b7
Create Date: 2026-11-24 00:01:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7ceab3ccff3c"
down_revision: str | Sequence[str] | None = "5ce0d3a1f2b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("log_excerpt", sa.Text(), nullable=True))
    op.create_table(
        "function_pools",
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("function", sa.String(length=128), nullable=False),
        sa.Column("idle", sa.Integer(), nullable=False),
        sa.Column("busy", sa.Integer(), nullable=False),
        sa.Column("starting", sa.Integer(), nullable=False),
        sa.Column("cold_starts", sa.BigInteger(), nullable=False),
        sa.Column("cold_start_p50_ms", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "function", name=op.f("pk_function_pools")),
    )


def downgrade() -> None:
    op.drop_table("function_pools")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("log_excerpt")
