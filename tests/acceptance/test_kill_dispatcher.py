"""``kill -9`` of ``eventwire serve`` mid-invocation loses nothing.

The killed process's leases expire (timeout + grace), a new ``serve`` leases
the invocations again and runs them; every acknowledged invocation finishes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.stores import BACKENDS, database_url

CONFIG = """
functions:
  hang:
    handler: tests.process_handlers:hang_once
    timeout: 3s
    retry: {backoff: {initial: 100ms}}
  mark:
    handler: tests.process_handlers:mark
    timeout: 3s
"""


@pytest.fixture(params=BACKENDS)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with database_url(request.param, tmp_path) as value:
        yield value


def invoke_async(env: dict[str, str], function: str, payload: dict[str, object]) -> str:
    done = eventwire("invoke", function, "--async", "--payload", json.dumps(payload), env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def state_of(env: dict[str, str], invocation_id: str) -> dict[str, object]:
    done = eventwire("invocations", "show", invocation_id, "--json", env=env)
    assert done.returncode == 0, done.stderr
    shown: dict[str, object] = json.loads(done.stdout)
    return shown


async def test_killed_dispatcher_loses_no_invocation(url: str, tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(EVENTWIRE_DATABASE_URL=url, EVENTWIRE_LEASE_GRACE="1s")
    assert eventwire("migrate", env=env).returncode == 0

    first = Serve(config, env, tmp_path / "serve-1.log")
    first.wait_serving()
    started = tmp_path / "started"
    hung = invoke_async(env, "hang", {"started": str(started)})
    wait_for(started.exists, 20, "the first attempt to start")
    runs = tmp_path / "runs.log"
    marked = [invoke_async(env, "mark", {"id": i, "log": str(runs)}) for i in range(20)]

    first.kill()
    second = Serve(config, env, tmp_path / "serve-2.log")
    try:
        second.wait_serving()
        wait_for(lambda: state_of(env, hung)["state"] == "succeeded", 30, "the hung invocation")
        wait_for(
            lambda: all(state_of(env, i)["state"] == "succeeded" for i in marked),
            30,
            "every queued invocation",
        )
    finally:
        assert second.stop() == 0, second.log()

    shown = state_of(env, hung)
    assert shown["attempts"] == 2  # the killed attempt and the one that finished
    lines = runs.read_text().split()
    assert sorted(map(int, set(lines))) == list(range(20))  # none lost
