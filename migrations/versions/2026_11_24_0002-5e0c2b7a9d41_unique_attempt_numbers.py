"""One attempt row per (invocation, number), so history written twice is written once.

Revision ID: 5e0c2b7a9d41
Revises: 1bece539be9b
Create Date: 2026-11-24 00:02:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "5e0c2b7a9d41"
down_revision: str | Sequence[str] | None = "1bece539be9b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_attempts_invocation_id", table_name="attempts")
    op.create_index(
        "ix_attempts_invocation_id", "attempts", ["invocation_id", "number"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_attempts_invocation_id", table_name="attempts")
    op.create_index("ix_attempts_invocation_id", "attempts", ["invocation_id", "number"])
