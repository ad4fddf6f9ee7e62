"""``eventwire dlq redrive`` of 10,000 dead letters: progress, Ctrl-C, kill -9, run again.

However often the redrive is interrupted and run again, every event is
enqueued exactly once.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from broker.ids import new_id
from broker.store.schema import dead_letters
from tests.support.processes import REPO, clean_env, eventwire, wait_for
from tests.support.stores import migrated_engine

MANY = 10_000


async def seed(tmp_path: Path) -> Path:
    """A store with MANY dead letters of "ingest", written straight into the table."""
    dead_at = datetime.now(UTC) - timedelta(hours=1)
    async with migrated_engine("sqlite", tmp_path) as engine:
        rows = []
        for i in range(MANY):
            invocation = new_id()
            rows.append(
                {
                    "id": new_id(),
                    "invocation_id": invocation,
                    "request_id": invocation,
                    "function": "ingest",
                    "payload": json.dumps({"n": i}).encode(),
                    "origin": "api",
                    "source": {},
                    "condition": "RetriesExhausted",
                    "error_type": "TimeoutError",
                    "error_message": "upstream timed out",
                    "attempts": 3,
                    "first_enqueued_at": dead_at - timedelta(minutes=5),
                    "dead_at": dead_at + timedelta(milliseconds=i),
                }
            )
        async with engine.begin() as conn:
            await conn.execute(insert(dead_letters), rows)
    return tmp_path / "eventwire.db"


class Redrive:
    """``eventwire dlq redrive …`` with stderr on a terminal, so the progress bar shows."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "dlq", "redrive", *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=slave,
            stdin=subprocess.DEVNULL,
        )
        os.close(slave)
        self.terminal = bytearray()
        self._reader = threading.Thread(target=self._read, args=(master,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        try:
            while chunk := os.read(fd, 65536):
                self.terminal += chunk
        except OSError:  # the process is gone
            pass
        finally:
            os.close(fd)

    def finish(self, timeout_s: float = 60) -> tuple[int, str, str]:
        out, _ = self.process.communicate(timeout=timeout_s)
        self._reader.join(10)
        return self.process.returncode, out.decode(), self.terminal.decode(errors="replace")


def redriven(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(
            conn.execute("SELECT count(*) FROM invocations WHERE origin = 'redrive'").fetchone()[0]
        )


async def test_interrupted_redrives_enqueue_each_event_once(tmp_path: Path) -> None:
    database = await seed(tmp_path)
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    args = ("ingest", "--all")

    # Ctrl-C part way through a rate-limited redrive.
    first = Redrive(env, *args, "--rate", "2500/s")
    wait_for(lambda: redriven(database) >= 1000, 30, "the first thousand")
    first.process.send_signal(signal.SIGINT)
    code, _, terminal = first.finish()
    assert code == 130, terminal
    assert "redriving" in terminal and f"/{MANY}" in terminal  # the progress bar
    assert "interrupted after" in terminal and "nothing runs twice" in terminal
    after_first = redriven(database)
    assert 1000 <= after_first < MANY

    # kill -9 part way through the next one.
    second = Redrive(env, *args, "--rate", "2500/s")
    wait_for(lambda: redriven(database) >= after_first + 1000, 30, "another thousand")
    second.process.kill()
    second.finish()
    assert redriven(database) < MANY

    # Then to the end; and once more, which finds nothing left to do.
    code, out, terminal = Redrive(env, *args, "--json").finish(120)
    assert code == 0, terminal
    summary = json.loads(out)
    assert summary["not_found"] == 0 and summary["redriven"] > 0
    again = eventwire("dlq", "redrive", *args, "--json", env=env)
    assert json.loads(again.stdout)["redriven"] == 0

    with sqlite3.connect(database) as conn:
        invocations = conn.execute(
            "SELECT id, idempotency_key, json_extract(source, '$.dead_letter_id'), payload "
            "FROM invocations WHERE origin = 'redrive'"
        ).fetchall()
        letters = dict(conn.execute("SELECT id, redriven_as FROM dead_letters").fetchall())
    assert len(invocations) == MANY  # each event enqueued exactly once
    assert {letter for _, _, letter, _ in invocations} == set(letters)
    assert {key for _, key, _, _ in invocations} == {f"redrive:{id}" for id in letters}
    by_letter = {letter: id for id, _, letter, _ in invocations}
    assert letters == by_letter  # each dead letter names the invocation that runs it
    assert sorted(json.loads(p)["n"] for *_, p in invocations) == list(range(MANY))
