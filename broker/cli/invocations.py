"""``eventwire invocations``: the invocation history, one invocation with its attempts, and
pruning what finished long ago."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.cli.app import App
from broker.cli.common import (
    JsonOption,
    confirm_deletion,
    err_console,
    open_store,
    print_json,
    run,
    settings,
)
from broker.cli.dlq_options import parse_time
from broker.cli.output import (
    attempts_view,
    details,
    emit,
    error_text,
    payload_view,
    short_ids,
    styled,
    table,
    to_json,
    when,
)
from broker.config.settings import Settings
from broker.errors import UsageError
from broker.models import State
from broker.queue import is_redis, require_redis
from broker.store.history import AttemptRow, InvocationRow, get_invocation, list_invocations
from broker.store.retention import count_prunable, prune_history
from broker.times import iso

app = App(help="Inspect invocations and their attempts.")

STATES = ", ".join(state.value for state in State)
NOT_KEPT = "(not kept: it succeeded while EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS was false)"


def parse_state(value: str) -> State:
    try:
        return State(value.strip().lower())
    except ValueError:
        raise UsageError(f"unknown state {value!r}; expected one of: {STATES}") from None


@app.command("ls")
def ls(
    ctx: typer.Context,
    function: Annotated[
        str | None,
        typer.Option(
            "--function", "-f", metavar="FUNCTION", help="Only this function's invocations."
        ),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", "-s", metavar="STATE", help=f"Only invocations in this state: {STATES}."
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="COUNT", help="At most this many.")
    ] = 50,
    before_seq: Annotated[
        int | None,
        typer.Option(
            "--before-seq", metavar="SEQ", help="Older than this seq (page on from a JSON listing)."
        ),
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """List invocations, newest first."""
    wanted = parse_state(state) if state is not None else None
    if limit < 1:
        raise UsageError(f"--limit must be 1 or more, got {limit}")
    rows = run(_list(settings(ctx), function, wanted, limit, before_seq))
    if as_json:
        print_json([_json(row) for row in rows])
        return
    if not rows:
        err_console.print("no invocations")
        return
    short = short_ids(row.id for row in rows)
    emit(
        table(
            ["ID", "FUNCTION", "STATE", "ORIGIN", "ATTEMPTS", "ENQUEUED", "UPDATED", "ERROR"],
            (
                [
                    short[row.id],
                    row.function,
                    styled(row.state.value),
                    row.origin.value,
                    row.attempts,
                    when(row.first_enqueued_at),
                    when(row.updated_at),
                    error_text(row.error_type, row.error_message),
                ]
                for row in rows
            ),
        )
    )


@app.command("show")
def show(
    ctx: typer.Context,
    id: Annotated[
        str, typer.Argument(metavar="ID", help="Invocation id, or its first 8 or more characters.")
    ],
    as_json: bool = JsonOption,
) -> None:
    """Show one invocation: payload, result or last error, and every attempt."""
    row, attempts = run(_get(settings(ctx), id))
    if as_json:
        print_json({**_json(row), "attempt_records": to_json(attempts)})
        return
    lease = f"{row.lease_owner} until {when(row.lease_expires_at)}" if row.lease_owner else None
    emit(
        details(
            [
                ("id", row.id),
                ("request id", row.request_id),
                ("function", row.function),
                ("state", styled(row.state.value)),
                ("origin", row.origin.value),
                ("source", json.dumps(dict(row.source)) if row.source else None),
                ("lane", row.lane),
                ("idempotency key", row.idempotency_key),
                ("attempts", _attempt_counts(row)),
                ("first enqueued", when(row.first_enqueued_at)),
                ("available at", when(row.available_at)),
                ("updated", when(row.updated_at)),
                ("finished", when(row.finished_at) if row.finished_at else None),
                ("lease", lease),
            ]
        )
    )
    emit(Text("\npayload", style="bold"))
    emit(payload_view(row.payload) if payload_kept(row) else Text(NOT_KEPT, style="dim"))
    if row.result is not None:
        emit(Text("\nresult", style="bold"))
        emit(payload_view(row.result))
    error = error_text(row.error_type, row.error_message)
    if error is not None:
        emit(Text("\nlast error", style="bold"))
        emit(Text(error, style="red"))
    emit()
    emit(attempts_view(attempts))


def payload_kept(row: InvocationRow) -> bool:
    """False for a succeeded invocation whose payload the history did not keep
    (``EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS`` off): it holds an empty one, which no
    enqueued event is (they are JSON)."""
    return not (row.state is State.SUCCEEDED and row.payload == b"")


def _json(row: InvocationRow) -> dict[str, Any]:
    """``row`` as JSON with ``payload_kept``; a payload not kept is null, not empty."""
    data: dict[str, Any] = to_json(row)
    data["payload_kept"] = payload_kept(row)
    if not data["payload_kept"]:
        data["payload"] = None
    return data


def _attempt_counts(row: InvocationRow) -> str:
    return (
        f"{row.attempts} ({row.function_errors} function errors, {row.system_errors} system errors)"
    )


@app.command("prune")
def prune(
    ctx: typer.Context,
    before: Annotated[
        str,
        typer.Option(
            "--before",
            metavar="WHEN",
            help="Delete those that finished before: YYYY-MM-DD, an ISO datetime (UTC unless "
            "it says otherwise) or an age like 7d or 12h.",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: bool = JsonOption,
) -> None:
    """Delete finished invocations (succeeded or failed) and their attempts from the
    history; pending and running ones and dead letters stay. `serve` does it by itself
    past EVENTWIRE_HISTORY_RETENTION."""
    cutoff = parse_time(before, datetime.now(UTC), "--before")
    config = settings(ctx)
    if not confirm_deletion(
        "invocations prune",
        yes,
        lambda: run(_count_prunable(config, cutoff)),
        lambda n: f"Delete {n} invocations that finished before {iso(cutoff)}?",
    ):
        _pruned(0, cutoff, as_json)
        return
    _pruned(run(_prune(config, cutoff)), cutoff, as_json)


def _pruned(count: int, cutoff: datetime, as_json: bool) -> None:
    if as_json:
        print_json({"pruned": count, "before": iso(cutoff)})
    else:
        emit(Text(f"pruned {count} invocations (finished before {iso(cutoff)})"))


async def _count_prunable(config: Settings, cutoff: datetime) -> int:
    async with open_store(config, reader=True) as engine:
        return await count_prunable(engine, cutoff)


async def _prune(config: Settings, cutoff: datetime) -> int:
    async with open_store(config) as engine:
        return await prune_history(engine, cutoff)


async def _list(
    config: Settings, function: str | None, state: State | None, limit: int, before_seq: int | None
) -> list[InvocationRow]:
    async with open_store(config, reader=True) as engine:
        rows = await list_invocations(
            engine, function=function, state=state, limit=limit, before_seq=before_seq
        )
        return await _with_queued_payloads(config, engine, rows)


async def _get(config: Settings, id: str) -> tuple[InvocationRow, list[AttemptRow]]:
    async with open_store(config, reader=True) as engine:
        row, attempts = await get_invocation(engine, id)
        [full] = await _with_queued_payloads(config, engine, [row])
        if full.updated_at != row.updated_at:  # it finished meanwhile: its attempts too
            return await get_invocation(engine, id)
        return full, attempts


async def _with_queued_payloads(
    config: Settings, engine: AsyncEngine, rows: list[InvocationRow]
) -> list[InvocationRow]:
    """``rows`` with their payloads: the Redis queue copies a large payload into the history
    with the final state, and until then the row holds an empty one (never an event's:
    they are JSON) and the payload is read from Redis."""
    waiting = [row.id for row in rows if _payload_queued(row)]
    if not waiting or not is_redis(config.effective_queue_url):
        return rows
    require_redis()
    from broker.queue.redis import queued_payloads  # redis-py only for a Redis queue

    found = await queued_payloads(config, waiting)
    full = []
    for row in rows:
        if row.id in found:
            row = replace(row, payload=found[row.id])
        elif _payload_queued(row):  # Redis held none: it finished meanwhile, read it again
            row, _ = await get_invocation(engine, row.id)
        full.append(row)
    return full


def _payload_queued(row: InvocationRow) -> bool:
    return not row.state.terminal and row.payload == b""
