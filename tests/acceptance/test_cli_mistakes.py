"""A user's mistake, in any command, exits non-zero with one clear line and no traceback.

Each case runs ``eventwire`` as its entry point does (``broker.cli.main.main``), in this
process for speed: an exception that escaped would fail the test as it would print a
traceback for the user. ``test_cli_admin`` runs a few of them as real processes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.functions.delivery import served_functions
from broker.loading import parse_config
from broker.store.history import register_functions
from tests.support.processes import REPO
from tests.support.stores import migrated_engine

CLOSED = "127.0.0.1:9"  # the discard port: nothing listens on it here
CONFIG = "functions:\n  hello: {handler: examples.functions:hello}\n"
BAD_CONFIG = "functions:\n  a:\n    handler: m:a\n    timeout: soon\n"


@pytest.fixture
async def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """A directory with a config, a broken config and a migrated store that knows ``hello``."""
    for name in [name for name in os.environ if name.startswith("EVENTWIRE_")]:
        monkeypatch.delenv(name)
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    (tmp_path / "eventwire.yaml").write_text(CONFIG)
    (tmp_path / "bad.yaml").write_text(BAD_CONFIG)
    async with migrated_engine("sqlite", tmp_path) as engine:
        config = parse_config({"functions": {"hello": {"handler": "m:h"}}})
        await register_functions(engine, served_functions(config), datetime.now(UTC))
        url = engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("EVENTWIRE_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


MISTAKES = [
    # what is named does not exist
    (["invoke", "nope"], "unknown function 'nope'"),
    (["logs", "nope"], "no function nope"),
    (["invocations", "show", "00000000"], "no invocation 00000000"),
    (["dlq", "show", "00000000"], "no dead letter 00000000"),
    (["schedules", "pause", "nope"], "unknown schedule 'nope'"),
    (["schedules", "next", "nope"], "unknown schedule 'nope'"),
    (["schedules", "next", "-c", "eventwire.yaml", "nope"], "no schedule 'nope'"),
    (["mappings", "disable", "nope"], "no mapping named 'nope'"),
    # files
    (["invoke", "hello", "--payload-file", "missing.json"], "--payload-file missing.json"),
    (["invoke", "hello", "-c", "missing.yaml"], "missing.yaml: no such configuration file"),
    (["serve", "-c", "missing.yaml"], "missing.yaml: no such configuration file"),
    (["config", "validate", "-c", "missing.yaml"], "missing.yaml: no such configuration file"),
    (["config", "validate", "-c", "bad.yaml"], "bad.yaml:4: functions.a.timeout"),
    (["serve", "-c", "bad.yaml"], "bad.yaml:4: functions.a.timeout"),
    (["dlq", "import", "missing.jsonl"], "cannot read missing.jsonl"),
    (["dlq", "export", "--output", "no/such/dir/x.jsonl"], "--output: cannot write"),
    # values
    (["invoke", "hello", "--payload", "{bad"], "payload is not valid JSON"),
    (["invocations", "ls", "--state", "dead"], "unknown state 'dead'"),
    (["invocations", "prune", "--before", "soon", "--yes"], "--before: expected a date"),
    (["dlq", "ls", "--since", "yesterday"], "--since: expected a date"),
    (["dlq", "redrive", "hello", "--all", "--rate", "fast"], "--rate: expected a rate"),
    (["dlq", "redrive", "--edit"], "--edit redrives one dead letter"),
    (["mappings", "seek", "m", "--to-timestamp", "then"], "--to-timestamp: expected"),
    (["schedules", "next", "-e", "cron(0 9 * * * *)"], "--expression: cron(0 9 * * * *)"),
    (["schedules", "next", "-e", "rate(1 hour)", "--tz", "Mars/Base"], "--tz: unknown time zone"),
    (["schedules", "next", "--tz", "UTC", "nightly"], "--tz goes with --expression"),
    (["schedules", "next"], "give a SCHEDULE name, or --expression"),
    (["serve", "--shutdown-grace", "soon"], "expected a duration like 30s"),
    (["serve", "--roles", "cook"], "unknown role 'cook'"),
    (["serve", "--log-level", "LOUD"], "expected one of DEBUG, INFO"),
    (["serve", "--api-listen", "nowhere"], "expected host:port"),
    # stores that cannot be reached or used
    (["--database-url", "garbage", "functions", "ls"], "database URL 'garbage' is not a URL"),
    (["--database-url", "mysql://x/y", "functions", "ls"], "scheme 'mysql' is not supported"),
    (["--database-url", "sqlite+aiosqlite:///none.db", "dlq", "ls"], "no Eventwire database"),
    (
        ["--database-url", f"postgresql+asyncpg://eventwire@{CLOSED}/x", "invocations", "ls"],
        f"cannot use the database at postgresql+asyncpg://eventwire@{CLOSED}/x",
    ),
    (
        ["--database-url", f"postgresql+asyncpg://eventwire@{CLOSED}/x", "migrate"],
        f"cannot use the database at postgresql+asyncpg://eventwire@{CLOSED}/x",
    ),
]


def refused(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """What ``eventwire ARGS`` wrote on stderr; it must have exited with code 2."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_mistake_is_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    lines = refused(capsys, args).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0], lines


def test_a_queue_that_cannot_be_reached_is_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTWIRE_QUEUE_URL", f"redis://{CLOSED}/0")
    [line] = refused(capsys, ["invoke", "hello", "--async"]).strip().splitlines()
    assert line.startswith(f"error: cannot use the Redis queue at redis://{CLOSED}/0"), line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version-please"], "No such option: --version-please"),
        (["invoke"], "Missing argument 'FUNCTION'"),
        (["dlq", "forget"], "No such command 'forget'"),
        (["invocations", "ls", "--limit", "many"], "Invalid value for '--limit'"),
    ],
)
def test_a_usage_mistake_shows_the_usage(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    err = refused(capsys, args)
    assert "Usage: eventwire" in err and message in err, err
    assert "Traceback" not in err
