"""``EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS=false`` as a user sets it: ``serve`` (and, on the
Redis queue, its history process) keeps no payload of an invocation that succeeded, and
``invocations show`` says so."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.stores import Store, store_for

CONFIG = """
functions:
  hello:
    handler: tests.handlers:echo
  broken:
    handler: tests.handlers:boom
    retry: {max_attempts: 1}
"""


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for(request.param, tmp_path) as value:
        yield value


def test_serve_keeps_no_succeeded_payload_when_told(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env(), EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS="false")
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        ids = {}
        for function in ("hello", "broken"):
            queued = eventwire("invoke", function, "--async", "--payload", '{"n": 7}', env=env)
            assert queued.returncode == 0, queued.stderr
            ids[function] = queued.stdout.strip()

        def shown(id: str) -> dict[str, Any]:
            done = eventwire("invocations", "show", id, "--json", env=env)
            return json.loads(done.stdout) if done.returncode == 0 else {}

        ok = wait_for(lambda: (s := shown(ids["hello"])).get("state") == "succeeded" and s, 30)
        failed = wait_for(lambda: (s := shown(ids["broken"])).get("state") == "failed" and s, 30)
        assert (ok["payload"], ok["payload_kept"], ok["result"]) == (None, False, {"n": 7})
        assert (failed["payload"], failed["payload_kept"]) == ({"n": 7}, True)
        text = eventwire("invocations", "show", ids["hello"], env=env).stdout
        assert "not kept" in text and "EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS" in text
    finally:
        assert serve.stop() == 0, serve.log()
