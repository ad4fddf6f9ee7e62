"""The history's retention as a user meets it: ``serve`` prunes what finished longer than
``EVENTWIRE_HISTORY_RETENTION`` ago, and ``eventwire invocations prune`` does on demand."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.stores import Store, store_for

CONFIG = """
functions:
  hello:
    handler: tests.handlers:echo
"""


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for(request.param, tmp_path) as value:
        yield value


def invoked(env: dict[str, str]) -> str:
    queued = eventwire("invoke", "hello", "--async", "--payload", '{"n": 7}', env=env)
    assert queued.returncode == 0, queued.stderr
    return queued.stdout.strip()


def state(id: str, env: dict[str, str]) -> str | None:
    """The invocation's state, or None once it is not in the history."""
    shown = eventwire("invocations", "show", id, "--json", env=env)
    if shown.returncode != 0:
        assert "no invocation" in shown.stderr, shown.stderr
        return None
    return str(json.loads(shown.stdout)["state"])


@contextmanager
def serving(store: Store, tmp_path: Path, retention: str) -> Iterator[tuple[dict[str, str], str]]:
    """``serve`` with ``EVENTWIRE_HISTORY_RETENTION=retention``, its environment, and the id
    of an invocation it ran (in the history)."""
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env(), EVENTWIRE_HISTORY_RETENTION=retention)
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        id = invoked(env)
        wait_for(lambda: state(id, env) == "succeeded", 30, "the invocation in the history")
        yield env, id
    finally:
        assert serve.stop() == 0, serve.log()


def test_serve_prunes_what_finished_past_the_retention(store: Store, tmp_path: Path) -> None:
    # Long enough for each `invocations show` (a second or two on a busy machine) to see
    # the invocation before it goes: pruned a retention (and a tenth) after it finished.
    with serving(store, tmp_path, "8s") as (env, id):
        wait_for(lambda: state(id, env) is None, 45, "the invocation pruned")


def test_invocations_prune_deletes_what_finished_before(store: Store, tmp_path: Path) -> None:
    with serving(store, tmp_path, "forever") as (env, id):
        kept = eventwire("invocations", "prune", "--before", "1h", "--yes", env=env)
        assert kept.returncode == 0, kept.stderr
        assert kept.stdout.startswith("pruned 0 invocations"), kept.stdout
        assert state(id, env) == "succeeded"

        done = eventwire("invocations", "prune", "--before", "0s", "--yes", "--json", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["pruned"] == 1
        assert state(id, env) is None


def test_prune_mistakes_are_one_clear_line(store: Store, tmp_path: Path) -> None:
    env = clean_env(**store.env())
    assert eventwire("migrate", env=env).returncode == 0

    bad = eventwire("invocations", "prune", "--before", "last week", "--yes", env=env)
    assert bad.returncode == 2
    assert "--before" in bad.stderr and "Traceback" not in bad.stderr

    unasked = eventwire("invocations", "prune", "--before", "7d", env=env, stdin=subprocess.DEVNULL)
    assert unasked.returncode == 2
    assert "--yes" in unasked.stderr and "Traceback" not in unasked.stderr


def test_a_bad_retention_stops_serve_with_the_setting_named(tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'e.db'}",
        EVENTWIRE_HISTORY_RETENTION="a week",
    )
    done = eventwire("serve", "-c", str(config), env=env)
    assert done.returncode == 2
    assert "EVENTWIRE_HISTORY_RETENTION" in done.stderr and "forever" in done.stderr
    assert "Traceback" not in done.stderr
