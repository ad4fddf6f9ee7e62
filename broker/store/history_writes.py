"""Writing history rows that arrive in bulk (from a queue that keeps its hot path elsewhere).

Every write is idempotent — invocations by id, attempts by (invocation,
number), dead letters by id, and a state only over an older one — so writing
the same rows twice leaves the tables as writing them once.

On PostgreSQL the two big inserts (new invocations, attempts) are one
statement each over ``unnest`` of column arrays, encoded by the driver: per
row that is a fraction of what binding each row through SQLAlchemy costs,
and it keeps the history writer off the dispatcher's CPU budget.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, LargeBinary, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.models import State
from broker.store.history_rows import KEPT_UNLESS_GIVEN, Rows
from broker.store.schema import dead_letters, functions, invocations, sqlite_text

inv = invocations.c

INVOCATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "varchar"),
    ("request_id", "varchar"),
    ("function", "varchar"),
    ("origin", "varchar"),
    ("source", "json"),
    ("lane", "varchar"),
    ("idempotency_key", "varchar"),
    ("sync", "bool"),
    ("payload", "bytea"),
    ("state", "varchar"),
    ("attempts", "int4"),
    ("function_errors", "int4"),
    ("system_errors", "int4"),
    ("first_enqueued_at", "timestamptz"),
    ("available_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("result", "bytea"),
    ("error_type", "varchar"),
    ("error_message", "text"),
)
ATTEMPT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("invocation_id", "varchar"),
    ("number", "int4"),
    ("started_at", "timestamptz"),
    ("duration_ms", "float8"),
    ("status", "varchar"),
    ("error_type", "varchar"),
    ("error_message", "text"),
    ("error_trace", "json"),
    ("log_excerpt", "text"),
)
JSON_COLUMNS = frozenset({"source", "error_trace"})


def _unnest_insert(table: str, columns: Sequence[tuple[str, str]], conflict: str) -> str:
    names = ", ".join(f'"{name}"' for name, _ in columns)
    arrays = ", ".join(f"${n}::{kind}[]" for n, (_, kind) in enumerate(columns, 1))
    return (
        f"INSERT INTO {table} ({names}) "
        f"SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, ord) "
        f"ORDER BY ord ON CONFLICT {conflict} DO NOTHING"
    )


UPDATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "varchar"),
    ("state", "varchar"),
    ("attempts", "int4"),
    ("function_errors", "int4"),
    ("system_errors", "int4"),
    ("result", "bytea"),
    ("error_type", "varchar"),
    ("error_message", "text"),
    ("updated_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("available_at", "timestamptz"),
    ("payload", "bytea"),
    ("source", "json"),
)
_PG_UPDATE = (
    "UPDATE invocations AS i SET "
    + ", ".join(
        f"{name} = u.{name}"
        for name, _ in UPDATE_COLUMNS
        if name != "id" and name not in KEPT_UNLESS_GIVEN
    )
    + "".join(f", {name} = COALESCE(u.{name}, i.{name})" for name in KEPT_UNLESS_GIVEN)
    + " FROM unnest("
    + ", ".join(f"${n}::{kind}[]" for n, (_, kind) in enumerate(UPDATE_COLUMNS, 1))
    + ") AS u("
    + ", ".join(name for name, _ in UPDATE_COLUMNS)
    + ") WHERE i.id = u.id AND (i.attempts < u.attempts"
    " OR (i.attempts = u.attempts AND i.state IN ('pending', 'running')))"
)
"""A state over an older one only: replayed events never take an invocation back."""

_PG_INVOCATIONS = _unnest_insert("invocations", INVOCATION_COLUMNS, "") + " RETURNING id"
_PG_ATTEMPTS = _unnest_insert("attempts", ATTEMPT_COLUMNS, "(invocation_id, number)")


def _sqlite_insert(table: str, columns: Sequence[tuple[str, str]], conflict: str) -> str:
    names = ", ".join(f'"{name}"' for name, _ in columns)
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT {conflict} DO NOTHING"


_SQLITE_INVOCATIONS = _sqlite_insert("invocations", INVOCATION_COLUMNS, "")
_SQLITE_ATTEMPTS = _sqlite_insert("attempts", ATTEMPT_COLUMNS, "(invocation_id, number)")

_UPDATE = (
    update(invocations)
    .where(
        inv.id == bindparam("b_id"),
        or_(
            inv.attempts < bindparam("b_attempts"),
            and_(
                inv.attempts == bindparam("b_attempts"),
                or_(inv.state == State.PENDING.value, inv.state == State.RUNNING.value),
            ),
        ),
    )
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        function_errors=bindparam("b_function_errors"),
        system_errors=bindparam("b_system_errors"),
        result=bindparam("b_result"),
        error_type=bindparam("b_error_type"),
        error_message=bindparam("b_error_message"),
        updated_at=bindparam("b_updated_at"),
        finished_at=bindparam("b_finished_at"),
        available_at=func.coalesce(
            bindparam("b_available_at", type_=inv.available_at.type), inv.available_at
        ),
        payload=func.coalesce(bindparam("b_payload", type_=LargeBinary()), inv.payload),
        source=func.coalesce(bindparam("b_source", type_=JSON(none_as_null=True)), inv.source),
    )
)


async def write_rows(conn: AsyncConnection, rows: Rows) -> None:
    """Write ``rows`` in ``conn``'s transaction."""
    postgres = conn.dialect.name == "postgresql"
    if rows.new:
        new = list(rows.new.values())
        if postgres:
            await _pg_insert_invocations(conn, new)
        else:
            await _insert_invocations(conn, new)
    if rows.updates:
        await _update(conn, list(rows.updates.values()))
    if rows.attempts:
        if postgres:
            await conn.exec_driver_sql(_PG_ATTEMPTS, _arrays(rows.attempts, ATTEMPT_COLUMNS))
        else:
            await conn.exec_driver_sql(
                _SQLITE_ATTEMPTS, _sqlite_rows(rows.attempts, ATTEMPT_COLUMNS)
            )
    if rows.dead_letters:
        insert = postgresql.insert if postgres else sqlite.insert
        await conn.execute(
            insert(dead_letters).on_conflict_do_nothing(index_elements=[dead_letters.c.id]),
            rows.dead_letters,
        )


async def add_throttles(conn: AsyncConnection, counts: dict[str, int]) -> None:
    if counts:
        await conn.execute(
            update(functions)
            .where(functions.c.name == bindparam("b_name"))
            .values(throttles=functions.c.throttles + bindparam("b_count")),
            [{"b_name": name, "b_count": count} for name, count in counts.items()],
        )


def _arrays(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
    return tuple(
        [_json(row[name]) for row in rows] if name in JSON_COLUMNS else [row[name] for row in rows]
        for name, _ in columns
    )


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _sqlite_rows(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]
) -> list[tuple[Any, ...]]:
    """``rows`` as parameters of the driver, each value as the columns' SQLAlchemy types
    store it on SQLite: JSON as ``json.dumps`` text, times as UTC text
    (:func:`~broker.store.schema.sqlite_text`), the rest as the driver binds it.
    Binding through SQLAlchemy costs several times as much per row, and the history
    writer binds thousands a second."""
    names = [name for name, _ in columns]
    times = [j for j, (_, kind) in enumerate(columns) if kind == "timestamptz"]
    texts = [j for j, (_, kind) in enumerate(columns) if kind == "json"]
    out = []
    for row in rows:
        values = [row[name] for name in names]
        for j in times:
            values[j] = sqlite_text(values[j])
        for j in texts:  # None too, as JSON's null: what SQLAlchemy's JSON type stores
            values[j] = json.dumps(values[j])
        out.append(tuple(values))
    return out


async def _pg_insert_invocations(conn: AsyncConnection, new: Sequence[dict[str, Any]]) -> None:
    result = await conn.exec_driver_sql(_PG_INVOCATIONS, _arrays(new, INVOCATION_COLUMNS))
    written = {id for (id,) in result}
    unwritten = [row for row in new if row["id"] not in written]
    if unwritten:
        rest = await _not_inserted(conn, unwritten)
        if rest:
            await conn.exec_driver_sql(_PG_INVOCATIONS, _arrays(rest, INVOCATION_COLUMNS))


async def _insert_invocations(conn: AsyncConnection, new: Sequence[dict[str, Any]]) -> None:
    result = await conn.exec_driver_sql(_SQLITE_INVOCATIONS, _sqlite_rows(new, INVOCATION_COLUMNS))
    if result.rowcount == len(new):
        return
    # Some were skipped: which ones is found out as on PostgreSQL (those inserted just now
    # are known by id too; their update writes the same state again).
    rest = await _not_inserted(conn, new)
    if rest:
        await conn.exec_driver_sql(_SQLITE_INVOCATIONS, _sqlite_rows(rest, INVOCATION_COLUMNS))


async def _not_inserted(
    conn: AsyncConnection, unwritten: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Handles rows the insert skipped; answers those still to insert.

    A row is skipped when its invocation is there already — a replay, possibly
    with later events folded in: its state is applied as an update, over an
    older state only — or when its idempotency key outlived the queue's window
    and an older invocation holds it: then it is inserted without the key.
    """
    known = {
        r.id
        for r in await conn.execute(
            select(inv.id).where(inv.id.in_([row["id"] for row in unwritten]))
        )
    }
    replayed = [{k: row[k] for k, _ in UPDATE_COLUMNS} for row in unwritten if row["id"] in known]
    if replayed:
        await _update(conn, replayed)
    return [{**row, "idempotency_key": None} for row in unwritten if row["id"] not in known]


async def _update(conn: AsyncConnection, states: Sequence[dict[str, Any]]) -> None:
    """Later states of invocations already written, each over an older one only."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(_PG_UPDATE, _arrays(states, UPDATE_COLUMNS))
    else:
        await conn.execute(_UPDATE, [{f"b_{k}": v for k, v in state.items()} for state in states])
