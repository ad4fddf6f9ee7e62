"""An index on attempts.started_at, for what each function did lately (``eventwire top``).

On a large PostgreSQL history, create it first with ``CREATE INDEX CONCURRENTLY IF NOT
EXISTS ix_attempts_started_at ON attempts (started_at)`` so that building it does not
block writes (this migration then finds it there).

Revision ID: b71c3e9d4a25
Revises: 9e4b2a7c1d08
Create Date: 2026-12-07 13:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b71c3e9d4a25"
down_revision: str | Sequence[str] | None = "9e4b2a7c1d08"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_attempts_started_at", "attempts", ["started_at"], unique=False, if_not_exists=True
    )


def downgrade() -> None:
    op.drop_index("ix_attempts_started_at", table_name="attempts")
