"""``eventwire mappings`` as a user runs it against a store with registered mappings."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from broker.loading import parse_config
from broker.store.engine import create_engine
from broker.store.mappings import register_mappings
from broker.store.migrate import upgrade
from tests.support.processes import clean_env, eventwire


async def _prepare(url: str) -> None:
    config = parse_config(
        {
            "functions": {"f": {"handler": "tests.handlers:noop"}},
            "mappings": [
                {"name": "orders", "source": "kafka://127.0.0.1:9092/orders", "function": "f"},
                {
                    "name": "emails",
                    "source": "amqp://guest:secret@127.0.0.1:5672/%2F?queue=emails",
                    "function": "f",
                },
            ],
        }
    )
    engine = create_engine(url)
    try:
        await upgrade(engine)
        await register_mappings(engine, config.mappings, datetime.now(UTC))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('mappings') / 'ew.db'}"
    asyncio.run(_prepare(url))
    return clean_env(EVENTWIRE_DATABASE_URL=url)


def test_ls_shows_state_and_hides_passwords(env: dict[str, str]) -> None:
    listing = eventwire("mappings", "ls", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["orders"]["state"] == "enabled"
    assert rows["emails"]["source"] == "amqp://guest:***@127.0.0.1:5672/%2F?queue=emails"
    assert "secret" not in eventwire("mappings", "ls", env=env).stdout


def test_disable_then_enable(env: dict[str, str]) -> None:
    assert eventwire("mappings", "disable", "orders", env=env).stdout.strip() == "orders disabled"
    rows = {r["name"]: r for r in json.loads(eventwire("mappings", "ls", "--json", env=env).stdout)}
    assert rows["orders"]["state"] == "disabled"
    assert eventwire("mappings", "enable", "orders", env=env).returncode == 0
    rows = {r["name"]: r for r in json.loads(eventwire("mappings", "ls", "--json", env=env).stdout)}
    assert rows["orders"]["state"] == "enabled"


def test_seek_moves_the_generation(env: dict[str, str]) -> None:
    done = eventwire(
        "mappings", "seek", "orders", "--to-timestamp", "2026-01-01T00:00:00Z", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["generation"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["disable", "nope"], "no mapping named 'nope'"),
        (["seek", "emails", "--to-timestamp", "2026-01-01"], "has no positions to seek to"),
        (["seek", "orders", "--to-timestamp", "yesterday"], "--to-timestamp: expected an ISO 8601"),
    ],
)
def test_mistakes_are_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    done = eventwire("mappings", *args, env=env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
