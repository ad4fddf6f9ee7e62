"""``eventwire schedules``: see when schedules fire, pause and resume them, fire by hand, backfill.

Times are shown in the schedule's zone and in UTC. A backfill enqueues each
slot in a range with the slot's own idempotency key, so slots that already
ran (or a backfill repeated) are not run twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.text import Text

from broker.cli.app import App
from broker.cli.common import (
    JsonOption,
    err_console,
    open_enqueuing,
    open_store,
    print_json,
    run,
    settings,
)
from broker.cli.output import emit, styled, table, to_json
from broker.config.models import check_timezone
from broker.config.settings import Settings
from broker.errors import UsageError
from broker.loading import load_config
from broker.sources.schedules import Timeline, schedule_source
from broker.store.schedules import (
    ACTIVE,
    PAUSED,
    ScheduleRow,
    get_schedule,
    list_schedules,
    set_state,
)
from broker.times import iso

app = App(help="See, pause, resume, trigger and backfill schedules.")

NameArg = Annotated[str, typer.Argument(metavar="SCHEDULE", help="The schedule's name.")]
LS_COLUMNS = [
    "NAME", "EXPRESSION", "FUNCTION", "STATE", "NEXT (ZONE)", "NEXT (UTC)", "LAST SLOT",
    "LAST RUN", "MISSED", "SKIPPED",
]  # fmt: skip
BACKFILL_LIMIT = 10_000
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Fire:
    slot: datetime
    invocation_id: str | None
    created: bool | None


def local_text(instant: datetime | None, zone: str) -> str | None:
    """``2026-03-29 03:00:00 CEST (+02:00)`` in ``zone``."""
    if instant is None:
        return None
    here = instant.astimezone(ZoneInfo(zone))
    offset = here.isoformat()[19:] or "+00:00"
    return f"{here:%Y-%m-%d %H:%M:%S} {here.tzname()} ({offset})"


def utc_text(instant: datetime | None) -> str | None:
    return None if instant is None else instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def upcoming(row: ScheduleRow, now: datetime) -> datetime | None:
    if row.state not in (ACTIVE, PAUSED):
        return None
    return schedule_source().timeline(row.expression, row.timezone).next_after(now)


def last_run(row: ScheduleRow) -> str | None:
    if row.last_outcome and row.last_outcome.startswith("skipped"):
        return row.last_outcome
    return row.last_invocation_state


@app.command("ls")
def ls(
    ctx: typer.Context,
    everything: Annotated[
        bool, typer.Option("--all", help="Include schedules deleted after completion.")
    ] = False,
    as_json: bool = JsonOption,
) -> None:
    """Schedules with their next fire time, last slot run and its outcome."""
    rows = run(_list(settings(ctx), everything))
    now = datetime.now(UTC)
    nexts = {row.name: upcoming(row, now) for row in rows}
    if as_json:
        print_json(
            [
                {
                    **to_json(row),
                    "next_slot_at": iso(nexts[row.name]),
                    "next_slot_local": local_text(nexts[row.name], row.timezone),
                    "last_run": last_run(row),
                }
                for row in rows
            ]
        )
        return
    if not rows:
        err_console.print("no schedules registered")
        return
    emit(
        table(
            LS_COLUMNS,
            (
                [
                    row.name,
                    f"{row.expression} {row.timezone}",
                    row.function,
                    styled(row.state),
                    local_text(nexts[row.name], row.timezone),
                    utc_text(nexts[row.name]),
                    utc_text(row.last_slot_at),
                    styled(last_run(row) or "-"),
                    row.missed,
                    row.skipped,
                ]
                for row in rows
            ),
        )
    )


@app.command("next")
def next_(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="SCHEDULE",
            help="The schedule's name: as a running serve registered it, or in --config.",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="Read SCHEDULE from this configuration file; no store or serve needed.",
        ),
    ] = None,
    expression: Annotated[
        str | None,
        typer.Option(
            "--expression",
            "-e",
            metavar="EXPRESSION",
            help="Preview this expression instead of a schedule: cron(...), rate(...) or at(...).",
        ),
    ] = None,
    zone: Annotated[
        str | None,
        typer.Option(
            "--tz",
            metavar="ZONE",
            help="The time zone of --expression, an IANA name like Europe/Berlin [default: UTC].",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("-n", "--count", metavar="COUNT", help="How many fire times.")
    ] = 5,
    after: Annotated[
        str | None,
        typer.Option(
            "--after",
            metavar="WHEN",
            help="Start from this date or time (in the schedule's zone) [default: now].",
        ),
    ] = None,
    as_json: bool = JsonOption,
) -> None:
    """The next fire times, in the schedule's zone and UTC; DST changes are marked.

    Of a schedule a running serve registered (SCHEDULE), of one in a configuration file
    (-c FILE SCHEDULE), or of a bare expression (--expression 'cron(0 9 ? * MON-FRI *)'
    --tz Europe/Berlin).
    """
    if not 1 <= count <= 1000:
        raise UsageError(f"-n must be 1 to 1000, got {count}")
    title, expr, tz = _previewed(ctx, name, config, expression, zone)
    start = parse_when("--after", after, tz) if after else datetime.now(UTC)
    slots = _slots(schedule_source().timeline(expr, tz), start, count)
    local = ZoneInfo(tz)
    offsets = [slot.astimezone(local).utcoffset() for slot in slots]
    changed = [i > 0 and offsets[i] != offsets[i - 1] for i in range(len(slots))]
    if as_json:
        print_json(
            [
                {"utc": iso(slot), "local": slot.astimezone(local).isoformat(), "dst_change": c}
                for slot, c in zip(slots, changed, strict=True)
            ]
        )
        return
    if not slots:
        err_console.print(Text(f"{title} has no more fire times"))
        return
    emit(
        table(
            [f"LOCAL ({tz})", "UTC", ""],
            (
                [local_text(slot, tz), utc_text(slot), "DST change" if c else ""]
                for slot, c in zip(slots, changed, strict=True)
            ),
            title=f"{title}: {expr}" if title != expr else expr,
        )
    )


def _previewed(
    ctx: typer.Context,
    name: str | None,
    config: str | None,
    expression: str | None,
    zone: str | None,
) -> tuple[str, str, str]:
    """What ``schedules next`` previews: its title, expression and time zone."""
    if expression is not None:
        if name is not None or config is not None:
            raise UsageError(
                "give either --expression or a SCHEDULE (with or without -c), not both"
            )
        tz = zone or "UTC"
        try:
            check_timezone(tz)
        except ValueError as exc:
            raise UsageError(f"--tz: {exc}") from None
        try:
            schedule_source().timeline(expression, tz)
        except ValueError as exc:
            raise UsageError(f"--expression: {exc}") from None
        return expression, expression, tz
    if zone is not None:
        raise UsageError("--tz goes with --expression; a schedule has its own time zone")
    if name is None:
        raise UsageError("give a SCHEDULE name, or --expression to preview an expression")
    if config is not None:
        schedules = load_config(config).schedules
        if name not in schedules:
            known = ", ".join(sorted(schedules)) or "none"
            raise UsageError(f"{config}: no schedule {name!r}; its schedules: {known}")
        schedule = schedules[name]
        return name, schedule.expression, schedule.timezone
    row = run(_get(settings(ctx), name))
    return name, row.expression, row.timezone


def _slots(timeline: Timeline, start: datetime, count: int) -> list[datetime]:
    """The first ``count`` slots at or after ``start``."""
    slots: list[datetime] = []
    cursor: datetime | None = start - timedelta(microseconds=1)
    while len(slots) < count and cursor is not None:
        cursor = timeline.next_after(cursor)
        if cursor is not None:
            slots.append(cursor)
    return slots


@app.command("pause")
def pause(ctx: typer.Context, name: NameArg) -> None:
    """Stop firing; slots while paused are not run later."""
    run(_set(settings(ctx), name, PAUSED))
    emit(Text(f"{name} paused"))


@app.command("resume")
def resume(ctx: typer.Context, name: NameArg) -> None:
    """Fire again, from the next slot on."""
    run(_set(settings(ctx), name, ACTIVE))
    emit(Text(f"{name} resumed"))


@app.command("trigger")
def trigger(ctx: typer.Context, name: NameArg, as_json: bool = JsonOption) -> None:
    """Fire once now (the event's time is now); prints the invocation id."""
    [fire] = run(_enqueue(settings(ctx), name, [], manual=True))
    if as_json:
        print_json(to_json(fire))
    else:
        emit(Text(fire.invocation_id or ""))


@app.command("backfill")
def backfill(
    ctx: typer.Context,
    name: NameArg,
    start: Annotated[
        str,
        typer.Option(
            "--from", metavar="WHEN", help="First day (or time) to fill, in the schedule's zone."
        ),
    ],
    end: Annotated[
        str, typer.Option("--to", metavar="WHEN", help="Last day (included), or a time (excluded).")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the slots without enqueuing them.")
    ] = False,
    as_json: bool = JsonOption,
) -> None:
    """Enqueue every slot in a range; slots already run are not run again."""
    config = settings(ctx)
    row = run(_get(config, name))
    first = parse_when("--from", start, row.timezone)
    last = parse_when("--to", end, row.timezone, end_of_day=True)
    if last <= first:
        raise UsageError(f"--to ({end}) must be after --from ({start})")
    edge = timedelta(microseconds=1)
    timeline = schedule_source().timeline(row.expression, row.timezone)
    slots = timeline.between(first - edge, last - edge)
    if len(slots) > BACKFILL_LIMIT:
        raise UsageError(
            f"{len(slots)} slots between {start} and {end}; a backfill takes at most "
            f"{BACKFILL_LIMIT}: split the range"
        )
    fires = [Fire(s, None, None) for s in slots] if dry_run else run(_enqueue(config, name, slots))
    if as_json:
        print_json(to_json(fires))
        return
    emit(
        table(
            [f"SLOT ({row.timezone})", "SLOT (UTC)", "INVOCATION", "RESULT"],
            (
                [
                    local_text(f.slot, row.timezone),
                    utc_text(f.slot),
                    f.invocation_id,
                    "-" if f.created is None else ("enqueued" if f.created else "already enqueued"),
                ]
                for f in fires
            ),
        )
    )
    created = sum(1 for f in fires if f.created)
    verb = "would enqueue" if dry_run else "enqueued"
    emit(Text(f"{len(fires)} slots: {verb} {len(fires) if dry_run else created}"))


def parse_when(flag: str, value: str, zone: str, *, end_of_day: bool = False) -> datetime:
    """A date (midnight; with ``end_of_day`` the next midnight) or a time, in ``zone``."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{flag}: expected a date like 2026-11-01 or a time like 2026-11-01T05:00, "
            f"got {value!r}"
        ) from None
    date_only = len(text) == 10
    if end_of_day and date_only:
        parsed += timedelta(days=1)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(UTC)


async def _list(config: Settings, everything: bool) -> list[ScheduleRow]:
    async with open_store(config, reader=True) as engine:
        return await list_schedules(engine, include_deleted=everything)


async def _get(config: Settings, name: str) -> ScheduleRow:
    async with open_store(config, reader=True) as engine:
        return await get_schedule(engine, name)


async def _set(config: Settings, name: str, state: str) -> None:
    async with open_store(config) as engine:
        row = await get_schedule(engine, name)
        if row.state not in (ACTIVE, PAUSED):
            raise UsageError(f"schedule {name!r} is {row.state}: it has no more slots")
        now = datetime.now(UTC)
        await set_state(engine, name, state, now, cursor_at=now if state == ACTIVE else None)


async def _enqueue(
    config: Settings, name: str, slots: list[datetime], *, manual: bool = False
) -> list[Fire]:

    async with open_store(config) as engine:
        row = await get_schedule(engine, name)
        schedule = row.schedule()
        source = schedule_source()
        if manual:
            slots = [datetime.now(UTC)]
        fires: list[Fire] = []
        async with open_enqueuing(config, engine) as queue:
            for i in range(0, len(slots), CHUNK):
                chunk = slots[i : i + CHUNK]
                items = [source.invocation(name, schedule, config, s, manual=manual) for s in chunk]
                answers = await queue.enqueue(items)
                fires += [Fire(s, a.id, a.created) for s, a in zip(chunk, answers, strict=True)]
        return fires
