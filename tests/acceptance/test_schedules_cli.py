"""``eventwire schedules`` as a user runs it against a store a ``serve`` registered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Serve, clean_env, eventwire, wait_for

CONFIG = """
functions:
  report:
    handler: tests.handlers:echo
schedules:
  nightly-report:
    expression: cron(30 2 * * ? *)
    timezone: Europe/Berlin
    function: report
    payload: {"kind": "daily"}
  launch:
    expression: at(2030-12-01T09:00:00)
    timezone: America/New_York
    function: report
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One ``serve`` for the module: the commands below only read, or add their own slots."""
    tmp_path = tmp_path_factory.mktemp("schedules")
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}")
    server = Serve(config, env, tmp_path / "serve.log")
    server.wait_serving()
    yield env
    assert server.stop() == 0, server.log()


def ok(*args: str, env: dict[str, str]) -> str:
    done = eventwire(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ls_next_pause_resume(env: dict[str, str]) -> None:
    listed = json.loads(ok("schedules", "ls", "--json", env=env))
    assert [(s["name"], s["state"]) for s in listed] == [
        ("launch", "active"),
        ("nightly-report", "active"),
    ]
    launch = listed[0]
    assert launch["next_slot_at"] == "2030-12-01T14:00:00Z"
    assert launch["next_slot_local"] == "2030-12-01 09:00:00 EST (-05:00)"
    table = ok("schedules", "ls", env=env)
    assert "nightly-report" in table and "cron(30 2 * * ? *) Europe/Berlin" in table

    spring = json.loads(
        ok("schedules", "next", "nightly-report", "-n", "3", "--after", "2026-03-28", "--json",
           env=env)
    )  # fmt: skip
    assert spring == [
        {"utc": "2026-03-28T01:30:00Z", "local": "2026-03-28T02:30:00+01:00", "dst_change": False},
        {"utc": "2026-03-29T01:00:00Z", "local": "2026-03-29T03:00:00+02:00", "dst_change": True},
        {"utc": "2026-03-30T00:30:00Z", "local": "2026-03-30T02:30:00+02:00", "dst_change": False},
    ]

    assert ok("schedules", "pause", "nightly-report", env=env).strip() == "nightly-report paused"
    paused = json.loads(ok("schedules", "ls", "--json", env=env))
    assert paused[1]["state"] == "paused"
    ok("schedules", "resume", "nightly-report", env=env)
    assert json.loads(ok("schedules", "ls", "--json", env=env))[1]["state"] == "active"


def test_trigger_runs_the_scheduled_event_now(env: dict[str, str]) -> None:
    invocation = ok("schedules", "trigger", "nightly-report", env=env).strip()
    wait_for(
        lambda: (
            json.loads(ok("invocations", "show", invocation, "--json", env=env))["state"]
            == "succeeded"
        ),
        30,
        "the triggered run",
    )
    shown = json.loads(ok("invocations", "show", invocation, "--json", env=env))
    assert shown["origin"] == "schedule"
    event = shown["result"]  # echo returns its event
    assert event["detail-type"] == "Scheduled Event"
    assert event["detail"] == {"kind": "daily"}
    assert event["resources"] == ["arn:aws:events:local:000000000000:rule/nightly-report"]


def test_backfill_enqueues_each_slot_once(env: dict[str, str]) -> None:
    args = ("schedules", "backfill", "nightly-report", "--from", "2026-10-24", "--to", "2026-10-26")
    first = json.loads(ok(*args, "--json", env=env))
    assert [f["slot"] for f in first] == [
        "2026-10-24T00:30:00Z",
        "2026-10-25T00:30:00Z",  # the repeated hour: once
        "2026-10-26T01:30:00Z",
    ]
    assert all(f["created"] for f in first)
    again = json.loads(ok(*args, "--json", env=env))
    assert [f["invocation_id"] for f in again] == [f["invocation_id"] for f in first]
    assert not any(f["created"] for f in again)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("schedules", "pause", "nightly"), "unknown schedule 'nightly'; registered schedules: "),
        (
            ("schedules", "backfill", "launch", "--from", "2026-13-01", "--to", "2026-12-02"),
            "--from: expected a date like 2026-11-01",
        ),
        (("schedules", "next", "launch", "-n", "0"), "-n must be 1 to 1000, got 0"),
    ],
)
def test_mistakes_are_one_line(env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    done = eventwire(*args, env=env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_config_with_a_bad_schedule_does_not_serve(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.replace("cron(30 2 * * ? *)", "cron(30 2 * * * *)"))
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}")
    done = eventwire("serve", "-c", str(config), env=env)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        ":7: schedules.nightly-report.expression: cron(30 2 * * * *): one of Day-of-month "
        "and Day-of-week must be '?' (got '*' and '*')"
    )


def test_next_previews_a_config_file_or_an_expression_without_a_server(tmp_path: Path) -> None:
    """No serve, no store: the database URL names a file that does not exist, and stays so."""
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    missing = tmp_path / "none.db"
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{missing}")

    from_file = json.loads(
        ok("schedules", "next", "-c", str(config), "nightly-report", "-n", "2",
           "--after", "2026-03-29", "--json", env=env)
    )  # fmt: skip
    assert [s["utc"] for s in from_file] == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]

    weekdays = json.loads(
        ok("schedules", "next", "--expression", "cron(0 9 ? * MON-FRI *)", "--tz",
           "Europe/Berlin", "--count", "5", "--after", "2026-03-26", "--json", env=env)
    )  # fmt: skip
    assert [(s["local"], s["dst_change"]) for s in weekdays] == [
        ("2026-03-26T09:00:00+01:00", False),
        ("2026-03-27T09:00:00+01:00", False),
        ("2026-03-30T09:00:00+02:00", True),  # the weekend skipped, summer time begun
        ("2026-03-31T09:00:00+02:00", False),
        ("2026-04-01T09:00:00+02:00", False),
    ]
    rate = json.loads(
        ok("schedules", "next", "-e", "rate(6 hours)", "-n", "3", "--after", "2026-01-01T01:00",
           "--json", env=env)
    )  # fmt: skip
    assert [s["utc"] for s in rate] == [
        "2026-01-01T06:00:00Z", "2026-01-01T12:00:00Z", "2026-01-01T18:00:00Z",
    ]  # fmt: skip
    once = ok("schedules", "next", "-e", "at(2030-12-01T09:00:00)", "--tz", "America/New_York",
              env=env)  # fmt: skip
    assert "2030-12-01 09:00:00 EST (-05:00)" in once and "2030-12-01 14:00:00Z" in once
    assert not missing.exists()
