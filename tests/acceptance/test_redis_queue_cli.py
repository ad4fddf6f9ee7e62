"""``eventwire`` with ``EVENTWIRE_QUEUE_URL=redis://…``, as a user runs it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.processes import Serve, alive, children, clean_env, eventwire, wait_for
from tests.support.services import free_port
from tests.support.stores import Store, store_for

CONFIG = """
functions:
  hello:
    handler: tests.handlers:echo
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for("redis", tmp_path) as value:
        yield value


def test_serve_and_invoke_through_redis(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env())
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        assert "queue redis://" in serve.log()
        done = eventwire("invoke", "hello", "--payload", '{"name": "x"}', env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"name": "x"}
        queued = eventwire("invoke", "hello", "--async", "--payload", "{}", env=env)
        assert queued.returncode == 0, queued.stderr
        invocation_id = queued.stdout.strip()

        def shown() -> dict[str, object]:
            done = eventwire("invocations", "show", invocation_id, "--json", env=env)
            return json.loads(done.stdout) if done.returncode == 0 else {}

        wait_for(lambda: shown().get("state") == "succeeded", 30, "the queued invocation")
    finally:
        assert serve.stop() == 0, serve.log()


def test_show_gives_a_large_payload_while_it_waits_in_redis(store: Store, tmp_path: Path) -> None:
    """A payload over 2 KB is copied into the history with the invocation's final state;
    until then ``invocations show`` reads it from Redis."""
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG + "  parked:\n    handler: tests.handlers:echo\n"
                      "    reserved_concurrency: 0\n")  # fmt: skip
    env = clean_env(**store.env())
    big = {"items": ["x" * 100] * 50}
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        ids = {}
        for name in ("parked", "hello"):
            done = eventwire("invoke", name, "--async", "--payload", json.dumps(big), env=env)
            assert done.returncode == 0, done.stderr
            ids[name] = done.stdout.strip()

        def shown(name: str) -> dict[str, object]:
            done = eventwire("invocations", "show", ids[name], "--json", env=env)
            return json.loads(done.stdout) if done.returncode == 0 else {}

        wait_for(lambda: shown("hello").get("state") == "succeeded", 30, "hello to finish")
        assert shown("hello")["payload"] == big
        parked = wait_for(lambda: shown("parked"), 30, "the parked invocation's history")
        assert (parked["state"], parked["payload"]) == ("pending", big)
        listed = eventwire("invocations", "ls", "-f", "parked", "--json", env=env)
        assert [row["payload"] for row in json.loads(listed.stdout)] == [big], listed.stderr
        url = f"redis://127.0.0.1:{free_port()}/0"
        down = eventwire(
            "invocations", "show", ids["parked"], env={**env, "EVENTWIRE_QUEUE_URL": url}
        )
        assert down.returncode == 2, (down.stdout, down.stderr)
        lines = down.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in down.stderr, down.stderr
        assert lines[0].startswith(f"error: cannot read payloads from the Redis queue at {url}")
    finally:
        assert serve.stop() == 0, serve.log()


def test_the_history_process_ends_with_a_killed_serve(store: Store, tmp_path: Path) -> None:
    """``serve`` copies history in a child process; ``kill -9`` of serve leaves no orphan."""
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env())
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        (writer,) = wait_for(
            lambda: children(serve.process.pid, "broker.history.process"), 10, "the writer"
        )
        done = eventwire("invoke", "hello", "--payload", '{"name": "x"}', env=env)
        assert done.returncode == 0, done.stderr
    finally:
        serve.kill()
    wait_for(lambda: not alive(writer), 10, "the history process to end")


@pytest.mark.parametrize("command", [["serve", "-c", "CONFIG"], ["invoke", "hello", "--async"]])
def test_unreachable_redis_is_one_line_naming_the_url(
    command: list[str], store: Store, tmp_path: Path
) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = clean_env(EVENTWIRE_DATABASE_URL=store.database_url, EVENTWIRE_QUEUE_URL=url)
    assert eventwire("migrate", env=env).returncode == 0
    done = eventwire(*[str(config) if a == "CONFIG" else a for a in command], env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: cannot use the Redis queue at " + url), lines
