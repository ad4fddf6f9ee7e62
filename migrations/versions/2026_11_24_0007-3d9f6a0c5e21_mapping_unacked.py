"""RabbitMQ mappings' batches whose acknowledgements are not yet confirmed.

Revision ID: 3d9f6a0c5e21
Revises: 7a4c19e2d6b3
Create Date: 2026-11-25 00:02:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "3d9f6a0c5e21"
down_revision: str | Sequence[str] | None = "7a4c19e2d6b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mapping_unacked",
        sa.Column("mapping", sa.String(length=128), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("function", sa.String(length=128), nullable=False),
        sa.Column("lane", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mapping", "idempotency_key", name=op.f("pk_mapping_unacked")),
    )


def downgrade() -> None:
    op.drop_table("mapping_unacked")
