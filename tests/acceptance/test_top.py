"""``eventwire top`` as an operator reads it: ``--once --json`` for scripts, a table
otherwise; the figures are what ``serve`` did."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.acceptance.test_metrics import finished, invoke
from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.stores import Store, store_for

CONFIG = """
functions:
  ok:
    handler: tests.handlers:echo
  doomed:
    handler: tests.handlers:boom
    retry: {max_attempts: 1}
schedules:
  hourly:
    expression: rate(1 hour)
    function: ok
"""


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for(request.param, tmp_path) as value:
        yield value


def test_top_shows_what_ran(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env())
    assert eventwire("migrate", env=env).returncode == 0
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        for id in [invoke(f, env) for f in ("ok", "ok", "doomed")]:
            wait_for(lambda: finished(id, env), 60, f"invocation {id} to finish")  # noqa: B023
        shown = eventwire("top", "--once", "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        snapshot = json.loads(shown.stdout)
        table = eventwire("top", "--once", env=env)
    finally:
        assert serve.stop() == 0, serve.log()
    functions = {f["name"]: f for f in snapshot["functions"]}
    assert functions["ok"]["invocations_per_s"] == round(2 / 60, 3)
    assert functions["ok"]["error_rate"] == 0
    assert functions["doomed"]["errors_per_s"] == round(1 / 60, 3)
    assert functions["doomed"]["error_rate"] == 1
    assert functions["doomed"]["dead_letters"] == 1
    assert functions["ok"]["pending"] == functions["ok"]["running"] == 0
    assert functions["ok"]["p50_ms"] is not None
    assert [s["name"] for s in snapshot["schedules"]] == ["hourly"]
    assert snapshot["schedules"][0]["next_slot_at"]
    assert table.returncode == 0, table.stderr
    assert "FUNCTION" in table.stdout and "doomed" in table.stdout and "hourly" in table.stdout


def test_json_without_once_is_one_clear_line(tmp_path: Path) -> None:
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}")
    shown = eventwire("top", "--json", env=env)
    assert shown.returncode == 2
    assert "--once" in shown.stderr and "Traceback" not in shown.stderr
