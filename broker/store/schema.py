"""The SQL schema, as SQLAlchemy Core tables.

Alembic (``migrations/``) owns the schema in the database; these tables are
what it is checked against (``tests/migrations``) and what the queries in
``broker/store`` and ``broker/queue/sql`` are written with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

ACTIVE = text("state IN ('pending', 'running')")
PENDING = text("state = 'pending'")
RUNNING = text("state = 'running'")
"""Literal conditions, as queries on partial indexes should name them: a prepared
statement's generic plan cannot tell that a bound parameter's rows are the index's."""


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused, as its zone is unknown."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: Eventwire stores UTC times only")
    return value.astimezone(UTC)


def sqlite_text(value: datetime | None) -> str | None:
    """``value`` as :class:`UTCDateTime` stores it on SQLite (SQLAlchemy's DATETIME text
    of the UTC wall time), for writers that bind through the driver."""
    if value is None:
        return None
    v = as_utc(value)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores the UTC wall time as text,
    which sorts and compares correctly because it is always UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Seq = BigInteger().with_variant(Integer(), "sqlite")

functions = Table(
    "functions",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("invoker", String(32), nullable=False),
    Column("config", JSON, nullable=False),
    Column("config_hash", String(64), nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("reserved_concurrency", Integer),
    Column("throttles", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", UTCDateTime, nullable=False),
)

invocations = Table(
    "invocations",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("request_id", String(36), nullable=False),
    Column("function", String(128), nullable=False),
    Column("origin", String(16), nullable=False),
    Column("source", JSON, nullable=False),
    Column("lane", String(255)),
    Column("idempotency_key", String(255)),
    Column("sync", Boolean, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("function_errors", Integer, nullable=False),
    Column("system_errors", Integer, nullable=False),
    Column("first_enqueued_at", UTCDateTime, nullable=False),
    Column("available_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("lease_owner", String(128)),
    Column("lease_token", String(36)),
    Column("lease_expires_at", UTCDateTime),
    Column("result", LargeBinary),
    Column("error_type", String(255)),
    Column("error_message", Text),
    UniqueConstraint("function", "idempotency_key"),
    # Leasing scans only unfinished invocations, in enqueue order.
    Index("ix_invocations_active", "seq", postgresql_where=ACTIVE, sqlite_where=ACTIVE),
    Index("ix_invocations_lane", "lane", "seq", postgresql_where=ACTIVE, sqlite_where=ACTIVE),
    Index("ix_invocations_function_seq", "function", "seq"),
    Index("ix_invocations_lease_token", "lease_token"),
    # When a dispatcher next has something to do: the earliest delayed retry, the earliest
    # lease to expire (``next_due``), found in the index without reading a row (``state``
    # too, though the predicate fixes it: SQLite reads an index alone only when it holds
    # every column the query names).
    Index(
        "ix_invocations_delayed",
        "function",
        "available_at",
        "state",
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    ),
    Index(
        "ix_invocations_leased",
        "function",
        "lease_expires_at",
        "state",
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    ),
    # Pruning the history past its retention (broker.store.retention).
    Index("ix_invocations_finished_at", "finished_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("invocation_id", String(36), nullable=False),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_type", String(255)),
    Column("error_message", Text),
    Column("error_trace", JSON),
    Column("log_excerpt", Text),  # what the function wrote during the attempt, capped
    Index("ix_attempts_invocation_id", "invocation_id", "number", unique=True),
    Index("ix_attempts_started_at", "started_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("invocation_id", String(36), nullable=False),
    Column("request_id", String(36), nullable=False),
    Column("function", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("source", JSON, nullable=False),
    Column("condition", String(32), nullable=False),
    Column("error_type", String(255)),
    Column("error_message", Text),
    Column("attempts", Integer, nullable=False),
    Column("first_enqueued_at", UTCDateTime, nullable=False),
    Column("dead_at", UTCDateTime, nullable=False),
    Column("redriven_at", UTCDateTime),
    Column("redriven_as", String(36)),
    # Set before a redrive enqueues: the function it goes to, so a re-run after a crash
    # enqueues to the same one (and its idempotency key holds) whatever `--to` it is given.
    Column("redrive_to", String(128)),
    Index("ix_dead_letters_function", "function", "dead_at"),
    Index("ix_dead_letters_invocation_id", "invocation_id"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("function", String(128), nullable=False),
    Column("expression", String(255), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("config", JSON, nullable=False),
    Column("config_hash", String(64), nullable=False),
    # active | paused | completed | deleted
    Column("state", String(16), nullable=False),
    # Every slot up to the cursor has been fired or skipped.
    Column("cursor_at", UTCDateTime, nullable=False),
    Column("next_slot_at", UTCDateTime),
    Column("last_slot_at", UTCDateTime),
    Column("last_fired_at", UTCDateTime),
    Column("last_invocation_id", String(36)),
    Column("last_outcome", String(64)),
    Column("missed", BigInteger, nullable=False, server_default="0"),
    Column("skipped", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", UTCDateTime, nullable=False),
)

leader_leases = Table(
    "leader_leases",
    metadata,
    Column("role", String(64), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

function_pools = Table(
    "function_pools",
    metadata,
    # The live figures of one serve process's pool for one function (broker/store/pools.py).
    Column("owner", String(128), primary_key=True),
    Column("function", String(128), primary_key=True),
    Column("idle", Integer, nullable=False),
    Column("busy", Integer, nullable=False),
    Column("starting", Integer, nullable=False),
    Column("cold_starts", BigInteger, nullable=False),
    Column("cold_start_p50_ms", Float),
    Column("updated_at", UTCDateTime, nullable=False),
)

object_files = Table(
    "object_files",
    metadata,
    # The files a dir:// object notification has reported, so a restart does not report them
    # again (pollers/s3/directory.py). ``path_hash`` is the sha256 of ``path``.
    Column("notification", String(64), primary_key=True),
    Column("path_hash", String(64), primary_key=True),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
)

mappings = Table(
    "mappings",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("source", String(1024), nullable=False),
    Column("function", String(128), nullable=False),
    Column("config_hash", String(64), nullable=False),
    # What the user asked for (`mappings enable|disable`), and seeks (`mappings seek`):
    # each seek moves the generation on, which also starts a new range of idempotency keys.
    Column("desired", String(16), nullable=False),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("seek_to", UTCDateTime),
    # What the pollers last reported.
    Column("status", String(16), nullable=False),
    Column("status_reason", Text),
    Column("lag", BigInteger),
    Column("iterator_age_ms", BigInteger),
    Column("reported_by", String(128)),
    Column("reported_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

mapping_cuts = Table(
    "mapping_cuts",
    metadata,
    # A batch a poller ended early (its batch window ran out): recorded before its
    # enqueue, so that after a crash the same records form the same batch again.
    Column("mapping", String(128), primary_key=True),
    Column("partition", String(255), primary_key=True),
    Column("first_position", String(64), nullable=False),
    Column("last_position", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

mapping_unacked = Table(
    "mapping_unacked",
    metadata,
    # An invocation of a RabbitMQ mapping's batch, recorded before it is enqueued and
    # removed once its messages' acknowledgements are confirmed. A message delivered
    # again in between (its consumer died) is looked up here, and its batch enqueued
    # again (idempotently) instead of being invoked a second time in another batch.
    Column("mapping", String(128), primary_key=True),
    Column("idempotency_key", String(255), primary_key=True),
    Column("messages", JSON, nullable=False),
    Column("function", String(128), nullable=False),
    Column("lane", String(255)),
    Column("payload", LargeBinary, nullable=False),
    Column("source", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
