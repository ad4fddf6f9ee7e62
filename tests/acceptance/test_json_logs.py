"""``EVENTWIRE_LOG_FORMAT=json``: what a line is about is in its fields, not only its text.

A ``serve`` with the JSON format runs a function that fails for good; the line
that says so carries the function, request id, invocation id and attempt as
fields, and every line is one JSON object.
"""

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
  flaky:
    handler: tests.handlers:boom
    retry: {max_attempts: 1}
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for("sqlite", tmp_path) as value:
        yield value


def lines(serve: Serve) -> list[dict[str, Any]]:
    return [json.loads(line) for line in serve.log().splitlines() if line.strip()]


def test_a_failure_line_names_its_invocation_in_fields(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env(), EVENTWIRE_LOG_FORMAT="json")
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        queued = eventwire("invoke", "flaky", "--async", "--payload", "{}", env=env)
        assert queued.returncode == 0, queued.stderr
        id = queued.stdout.strip()

        def failed() -> dict[str, Any] | None:
            return next((d for d in lines(serve) if "failed for good" in d["message"]), None)

        line = wait_for(failed, 30, "the failure logged")
    finally:
        assert serve.stop() == 0, serve.log()
    assert line["function"] == "flaky"
    assert line["invocation_id"] == id
    assert line["attempt"] == 1
    assert line["request_id"]
    assert line["level"] == "warning"
    # Lines about no invocation carry none of these fields.
    serving = next(d for d in lines(serve) if d["message"].startswith("serving"))
    assert "function" not in serving and "invocation_id" not in serving
