"""An index on invocations.finished_at, for pruning the history past its retention.

On a large PostgreSQL history the index takes a while to build and blocks writes to
``invocations`` meanwhile: to avoid that, create it first with ``CREATE INDEX
CONCURRENTLY IF NOT EXISTS ix_invocations_finished_at ON invocations (finished_at)``
(this migration then finds it there).

Revision ID: 5c2e8b7f1a94
Revises: 3d9f6a0c5e21
Create Date: 2026-11-24 10:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5c2e8b7f1a94"
down_revision: str | Sequence[str] | None = "3d9f6a0c5e21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_invocations_finished_at",
        "invocations",
        ["finished_at"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_invocations_finished_at", table_name="invocations")
