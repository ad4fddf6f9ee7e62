"""Partial indexes that answer when a dispatcher next has something to do.

The earliest delayed retry (``state = 'pending'``) and the earliest lease to
expire (``state = 'running'``) per function, read from the index alone: before
them each idle dispatcher's wait scanned the function's whole history, and on
SQLite read every row's payload on the way (the columns it needed are stored
after it).

On a large PostgreSQL history, create them first with ``CREATE INDEX CONCURRENTLY
IF NOT EXISTS`` (the names and definitions below) to avoid blocking writes; this
migration then finds them there.

Revision ID: 9e4b2a7c1d08
Revises: 5c2e8b7f1a94
Create Date: 2026-11-24 17:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "9e4b2a7c1d08"
down_revision: str | Sequence[str] | None = "5c2e8b7f1a94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("state = 'pending'")
RUNNING = sa.text("state = 'running'")


def upgrade() -> None:
    op.create_index(
        "ix_invocations_delayed",
        "invocations",
        ["function", "available_at", "state"],
        unique=False,
        postgresql_where=PENDING,
        sqlite_where=PENDING,
        if_not_exists=True,
    )
    op.create_index(
        "ix_invocations_leased",
        "invocations",
        ["function", "lease_expires_at", "state"],
        unique=False,
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_invocations_leased", table_name="invocations")
    op.drop_index("ix_invocations_delayed", table_name="invocations")
