"""``serve --roles``: one process reads a source and enqueues, another runs the function.

Both share a Redis queue and a PostgreSQL store, as a deployment that puts
pollers and dispatchers on different cores or machines does. The poller
process starts no invoker and no history writer; the dispatching process runs
every invocation and copies the history.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    Serve,
    children,
    clean_env,
    eventwire,
    eventwire_json,
    wait_for,
)
from tests.support.redis import redis_prefix
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.services import REDIS_URL
from tests.support.stores import database_url

ENTRIES = 60
CONFIG = """
functions:
  sink:
    handler: tests.mapping_handlers:sink
    timeout: 2s
mappings:
  - name: clicks
    source: {source}
    function: sink
    batch_size: 10
    starting_position: trim_horizon
"""


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with database_url("postgres", tmp_path) as url, redis_prefix() as prefix:
        yield clean_env(
            EVENTWIRE_DATABASE_URL=url,
            EVENTWIRE_QUEUE_URL=REDIS_URL,
            EVENTWIRE_QUEUE_PREFIX=prefix.rstrip(":"),
            MAPPING_TEST_SINK=str(tmp_path / "sink.jsonl"),
        )


async def test_pollers_and_dispatch_in_two_processes(
    redis_stream: RedisStream,  # noqa: F811
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    from redis.asyncio import Redis

    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG.format(source=redis_stream.source_uri()))
    migrated = eventwire("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    pollers = Serve(config, env, tmp_path / "pollers.log", "--roles", "pollers")
    dispatch = Serve(config, {**env, "EVENTWIRE_ROLES": "dispatch"}, tmp_path / "dispatch.log")
    sink = Path(env["MAPPING_TEST_SINK"])
    try:
        pollers.wait_serving()
        dispatch.wait_serving()
        assert "serving no functions" in pollers.log() and "roles pollers" in pollers.log()
        assert "serving 1 functions" in dispatch.log()
        client = Redis.from_url(redis_stream.url)
        try:
            for n in range(ENTRIES):
                await client.xadd(redis_stream.key, {"n": str(n)})
        finally:
            await client.aclose()

        def entries() -> list[dict[str, Any]]:
            text = sink.read_text() if sink.exists() else ""
            return [json.loads(line) for line in text.splitlines() if line.strip()]

        wait_for(lambda: sum(len(e["records"]) for e in entries()) >= ENTRIES, 60, "every entry")
        # Only the dispatching process runs the function and writes the history.
        assert {e["pid"] for e in entries()} == {dispatch.process.pid}
        assert children(pollers.process.pid, "broker.history.process") == []
        assert len(children(dispatch.process.pid, "broker.history.process")) == 1

        def listed() -> list[dict[str, Any]]:
            rows = eventwire_json("invocations", "ls", env=env)
            return [r for r in rows if r["state"] == "succeeded"]

        wait_for(lambda: len(listed()) == len(entries()), 30, "the history of every invocation")
        assert pollers.stop() == 0, pollers.log()
        assert dispatch.stop() == 0, dispatch.log()
    finally:
        for server in (pollers, dispatch):
            if server.process.poll() is None:
                server.kill()


def test_an_unknown_role_is_refused_before_anything_starts(tmp_path: Path) -> None:
    store = tmp_path / "eventwire.db"
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{store}")
    done = eventwire("serve", "--roles", "pollers,dispach", env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: setting roles (EVENTWIRE_ROLES or --roles): unknown role 'dispach'; "
        "expected a comma-separated list of api, dispatch, pollers, scheduler, "
        "got 'pollers,dispach'"
    )
    assert not store.exists()
