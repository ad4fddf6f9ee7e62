"""The admin commands (``functions``, ``invocations``, ``dlq``, ``config``) as a user runs them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from broker.cli.main import app
from broker.errors import NotFoundError, UsageError
from broker.functions.delivery import served_functions
from broker.loading import parse_config
from broker.models import State
from broker.store.engine import create_engine
from broker.store.history import register_functions
from tests.support.processes import clean_env, eventwire
from tests.support.stores import migrated_engine
from tests.unit.test_history import add_attempt, add_dead_letter, add_invocation

NOW = datetime.now(UTC).replace(microsecond=0)
ERROR_TRACE = '  File "handlers.py", line 7, in handler\n    raise ValueError("bad order")\n'


@dataclass
class Store:
    url: str
    ok: str  # a succeeded invocation of "orders"
    failed: str  # a failed one, with two attempts and a dead letter
    other: str  # a pending invocation of "mail"
    letter: str  # the dead letter of `failed`
    old_letter: str  # a dead letter of "orders" from 30 days ago


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    for name in [name for name in os.environ if name.startswith("EVENTWIRE_")]:
        monkeypatch.delenv(name)
    async with migrated_engine("sqlite", tmp_path) as engine:
        config = {"functions": {"orders": {"handler": "m:orders"}, "mail": {"handler": "m:mail"}}}
        await register_functions(engine, served_functions(parse_config(config)), NOW)
        ok = await add_invocation(
            engine, function="orders", state=State.SUCCEEDED, at=NOW, result=b'{"ok": true}'
        )
        failed = await add_invocation(
            engine,
            function="orders",
            state=State.FAILED,
            at=NOW,
            payload=b'{"order": 42}',
            attempts=2,
            error_type="ValueError",
            error_message="bad order",
        )
        await add_attempt(engine, failed, 1, error_message="bad order", error_trace=[ERROR_TRACE])
        await add_attempt(engine, failed, 2, error_message="bad order", error_trace=[ERROR_TRACE])
        other = await add_invocation(engine, function="mail", state=State.PENDING, at=NOW)
        letter = await add_dead_letter(
            engine, function="orders", dead_at=NOW, invocation_id=failed, payload=b'{"order": 42}'
        )
        old_letter = await add_dead_letter(
            engine, function="orders", dead_at=NOW - timedelta(days=30), payload=b"\xff\x00"
        )
        url = engine.url.render_as_string(hide_password=False)
    yield Store(url, ok, failed, other, letter, old_letter)


def cli(store: Store, *args: str) -> Result:
    return CliRunner().invoke(app, ["--database-url", store.url, *args])


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


# ---------------------------------------------------------------- functions, invocations


def test_functions_ls(store: Store) -> None:
    table = ok(cli(store, "functions", "ls"))
    assert "orders" in table and "mail" in table

    rows = json.loads(ok(cli(store, "functions", "ls", "--json")))
    by_name = {row["name"]: row for row in rows}
    assert (by_name["mail"]["pending"], by_name["orders"]["dead_letters"]) == (1, 2)


def test_listings_read_while_serve_holds_the_write_lock(store: Store) -> None:
    """A busy ``serve`` on SQLite takes the write lock again and again; listings read
    past it (WAL) instead of queueing for it."""
    database = make_url(store.url).database
    assert database is not None
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        env = clean_env(EVENTWIRE_DATABASE_URL=store.url)
        for command in (["functions", "ls"], ["invocations", "ls"], ["dlq", "ls"]):
            done = eventwire(*command, "--json", env=env, timeout=20)
            assert done.returncode == 0, (command, done.stderr)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_invocations_ls_table_and_json(store: Store) -> None:
    table = ok(cli(store, "invocations", "ls"))
    for id in (store.ok, store.failed, store.other):
        assert id[:8] in table
    assert "succeeded" in table and "failed" in table and "pending" in table

    rows = json.loads(ok(cli(store, "invocations", "ls", "--json")))
    assert [row["id"] for row in rows] == [store.other, store.failed, store.ok]
    assert rows[1]["payload"] == {"order": 42} and rows[2]["result"] == {"ok": True}
    assert rows[0]["first_enqueued_at"] == NOW.isoformat().replace("+00:00", "Z")

    failed = json.loads(
        ok(cli(store, "invocations", "ls", "-f", "orders", "-s", "FAILED", "--json"))
    )
    assert [row["id"] for row in failed] == [store.failed]


def test_invocations_ls_bad_state(store: Store) -> None:
    result = cli(store, "invocations", "ls", "--state", "dead")
    assert result.exit_code != 0
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == (
        "unknown state 'dead'; expected one of: pending, running, succeeded, failed"
    )


def test_invocations_show(store: Store) -> None:
    shown = ok(cli(store, "invocations", "show", store.failed))
    assert store.failed in shown and '"order": 42' in shown
    assert "ValueError: bad order" in shown
    assert 'File "handlers.py", line 7, in handler' in shown  # the stack trace

    data = json.loads(ok(cli(store, "invocations", "show", store.failed, "--json")))
    assert data["id"] == store.failed and data["state"] == "failed" and data["attempts"] == 2
    records = data["attempt_records"]
    assert [a["number"] for a in records] == [1, 2]
    assert records[0]["error_trace"] == [ERROR_TRACE] and records[0]["status"] == "error"

    missing = cli(store, "invocations", "show", "ffffffff-0000")
    assert isinstance(missing.exception, NotFoundError)


@pytest.fixture
async def emptied(store: Store) -> tuple[str, str]:
    """A succeeded invocation whose payload the history did not keep (it holds an empty
    one: ``EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS`` off), and a failed one that was empty."""
    engine = create_engine(store.url)
    try:
        dropped = await add_invocation(
            engine, function="orders", state=State.SUCCEEDED, at=NOW, payload=b"", result=b"1"
        )
        empty = await add_invocation(
            engine, function="orders", state=State.FAILED, at=NOW, payload=b""
        )
    finally:
        await engine.dispose()
    return dropped, empty


def test_invocations_show_a_succeeded_payload_not_kept(
    store: Store, emptied: tuple[str, str]
) -> None:
    dropped, empty = emptied
    shown = ok(cli(store, "invocations", "show", dropped))
    assert "not kept" in shown and "EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS" in shown
    assert "base64" not in shown
    data = json.loads(ok(cli(store, "invocations", "show", dropped, "--json")))
    assert (data["payload"], data["payload_kept"], data["result"]) == (None, False, 1)

    # A payload that was there, and an empty one that was not dropped, show as they are.
    kept = json.loads(ok(cli(store, "invocations", "show", store.ok, "--json")))
    assert (kept["payload"], kept["payload_kept"]) == ({"n": 1}, True)
    assert "not kept" not in ok(cli(store, "invocations", "show", store.ok))
    shown = ok(cli(store, "invocations", "show", empty))
    assert "not kept" not in shown and "0 bytes as base64" in shown
    data = json.loads(ok(cli(store, "invocations", "show", empty, "--json")))
    assert (data["payload"], data["payload_kept"]) == ({"$base64": ""}, True)

    listed = {row["id"]: row for row in json.loads(ok(cli(store, "invocations", "ls", "--json")))}
    assert (listed[dropped]["payload"], listed[dropped]["payload_kept"]) == (None, False)
    assert listed[store.failed]["payload_kept"] is True


# ---------------------------------------------------------------- dlq


def test_dlq_ls_and_show(store: Store) -> None:
    table = ok(cli(store, "dlq", "ls", "orders"))
    assert "RetriesExhausted" in table and "orders" in table
    assert "dead-letter queue is empty for mail" in cli(store, "dlq", "ls", "mail").output

    rows = json.loads(ok(cli(store, "dlq", "ls", "--json")))
    assert [row["id"] for row in rows] == [store.letter, store.old_letter]
    assert rows[1]["payload"] == {"$base64": "/wA="}

    shown = json.loads(ok(cli(store, "dlq", "show", store.letter, "--json")))
    assert shown["invocation_id"] == store.failed
    assert len(shown["attempt_records"]) == 2
    assert "bad order" in ok(cli(store, "dlq", "show", store.letter))


def test_dlq_redrive_by_id_runs_each_event_once(store: Store) -> None:
    first = ok(cli(store, "dlq", "redrive", "--id", store.letter))
    assert "redriven 1, already redriven 0" in first
    again = ok(cli(store, "dlq", "redrive", "--id", store.letter))
    assert "redriven 0, already redriven 1" in again

    redriven = json.loads(ok(cli(store, "invocations", "ls", "-s", "pending", "--json")))
    new = [row for row in redriven if row["origin"] == "redrive"]
    assert len(new) == 1
    assert new[0]["idempotency_key"] == f"redrive:{store.letter}"
    assert new[0]["payload"] == {"order": 42}
    assert new[0]["source"] == {"dead_letter_id": store.letter, "invocation_id": store.failed}

    left = json.loads(ok(cli(store, "dlq", "ls", "--json")))
    assert [row["id"] for row in left] == [store.old_letter]
    everything = json.loads(ok(cli(store, "dlq", "ls", "--all", "--json")))
    assert everything[0]["redriven_as"] == new[0]["id"]


def test_dlq_redrive_all_of_a_function(store: Store) -> None:
    summary = json.loads(ok(cli(store, "dlq", "redrive", "orders", "--all", "--json")))
    assert (summary["redriven"], summary["already_redriven"]) == (2, 0)
    assert {r["dead_letter_id"] for r in summary["results"]} == {store.letter, store.old_letter}
    assert json.loads(ok(cli(store, "dlq", "ls", "--json"))) == []


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "redrive"],
        ["dlq", "redrive", "orders"],
        ["dlq", "redrive", "--all"],
        ["dlq", "redrive", "orders", "--all", "--id", "x"],
    ],
)
def test_dlq_redrive_needs_ids_or_function_all(store: Store, args: list[str]) -> None:
    assert isinstance(cli(store, *args).exception, UsageError)


def test_dlq_purge(store: Store) -> None:
    refused = cli(store, "dlq", "purge", "orders", "--before", "7d")
    assert refused.exit_code != 0
    assert isinstance(refused.exception, UsageError)
    assert "--yes" in str(refused.exception)
    assert len(json.loads(ok(cli(store, "dlq", "ls", "--json")))) == 2

    purged = json.loads(
        ok(cli(store, "dlq", "purge", "orders", "--before", "7d", "--yes", "--json"))
    )
    assert purged["purged"] == 1
    assert [row["id"] for row in json.loads(ok(cli(store, "dlq", "ls", "--json")))] == [
        store.letter
    ]

    tomorrow = (NOW + timedelta(days=1)).date().isoformat()
    assert "purged 1 dead letters" in ok(
        cli(store, "dlq", "purge", "orders", "--before", tomorrow, "--yes")
    )
    bad = cli(store, "dlq", "purge", "orders", "--before", "last week", "--yes")
    assert isinstance(bad.exception, UsageError)


# ---------------------------------------------------------------- config, one-line errors


def test_config_validate(store: Store, tmp_path: Path) -> None:
    good = tmp_path / "eventwire.yaml"
    good.write_text("functions:\n  a: {handler: 'm:a'}\n  b: {handler: 'm:b'}\n")
    assert (
        ok(cli(store, "config", "validate", "-c", str(good))).strip() == f"ok: {good}: 2 functions"
    )


def test_user_mistakes_are_one_red_line(store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("functions:\n  a:\n    handler: 'm:a'\n    timeout: soon\n")
    env = clean_env(EVENTWIRE_DATABASE_URL=store.url)
    cases = [
        (["invocations", "ls", "--state", "dead"], "unknown state 'dead'; expected one of"),
        (["dlq", "purge", "orders", "--before", "7d"], "stdin is not a terminal; pass --yes"),
        (["dlq", "show", "0000000000"], "no dead letter 0000000000"),
        (["config", "validate", "-c", str(bad)], f"{bad}:4: functions.a.timeout"),
    ]
    for args, message in cases:
        done = eventwire(*args, env=env, stdin=subprocess.DEVNULL)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert message in lines[0], lines
