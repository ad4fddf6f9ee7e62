"""A ``dir://`` object notification: real files in a watched directory, across a restart."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.processes import Serve, clean_env, eventwire, wait_for

CONFIG = """
functions:
  ingest:
    handler: tests.handlers:echo
object_notifications:
  - name: dropbox
    source: dir://{folder}
    settle: 600ms
    function: ingest
"""


def events(database: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(event name, key, object) of every invocation in the store, oldest first."""
    with sqlite3.connect(database) as conn:
        payloads = [row[0] for row in conn.execute("SELECT payload FROM invocations ORDER BY seq")]
    found = []
    for payload in payloads:
        [record] = json.loads(payload)["Records"]
        found.append((record["eventName"], record["s3"]["object"]["key"], record["s3"]["object"]))
    return found


def keys(database: Path) -> Counter[tuple[str, str]]:
    return Counter((name, key) for name, key, _ in events(database))


def test_files_are_reported_once_complete_and_not_again_after_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "dropbox"
    folder.mkdir()
    (folder / "old.txt").write_text("there before serve started")
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG.format(folder=folder))
    db = tmp_path / "eventwire.db"
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{db}")

    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        wait_for(lambda: keys(db)[("ObjectCreated:Put", "old.txt")], 20, "old.txt reported")

        (folder / "in box").mkdir()
        (folder / "in box" / "a b.csv").write_text("x,y\n1,2\n")
        (folder / ".hidden-partial").write_text("ignored")
        content = b""
        with (folder / "big.bin").open("wb") as big:  # still being written for 1.2s
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                chunk = b"z" * 4096
                big.write(chunk)
                big.flush()
                content += chunk
                time.sleep(0.05)  # the pace of a slow writer, not a wait for a result
        # Reported while incomplete, it would be reported again once complete, with
        # another size: one report with the final size means it waited for the last write.
        wait_for(lambda: keys(db)[("ObjectCreated:Put", "big.bin")], 20, "big.bin reported")
        wait_for(lambda: keys(db)[("ObjectCreated:Put", "in+box/a+b.csv")], 20, "a b.csv")
        [big_object] = [obj for _, key, obj in events(db) if key == "big.bin"]
        assert big_object["size"] == len(content)  # reported once, complete
        assert big_object["eTag"] == hashlib.md5(content, usedforsecurity=False).hexdigest()
    finally:
        assert serve.stop() == 0

    # While serve is down: one file removed, one added, one rewritten.
    (folder / "in box" / "a b.csv").unlink()
    (folder / "new.txt").write_text("new")
    (folder / "old.txt").write_text("rewritten, so reported again")

    again = Serve(config, env, tmp_path / "serve2.log")
    try:
        again.wait_serving()
        wait_for(lambda: keys(db)[("ObjectCreated:Put", "new.txt")], 20, "new.txt reported")
        wait_for(lambda: keys(db)[("ObjectRemoved:Delete", "in+box/a+b.csv")], 20, "removal")
        wait_for(lambda: keys(db)[("ObjectCreated:Put", "old.txt")] == 2, 20, "rewrite")
        (folder / "big.bin").unlink()
        wait_for(lambda: keys(db)[("ObjectRemoved:Delete", "big.bin")], 20, "big.bin removed")
    finally:
        assert again.stop() == 0

    assert keys(db) == Counter(
        {
            ("ObjectCreated:Put", "old.txt"): 2,
            ("ObjectCreated:Put", "big.bin"): 1,  # not again after the restart
            ("ObjectCreated:Put", "in+box/a+b.csv"): 1,
            ("ObjectRemoved:Delete", "in+box/a+b.csv"): 1,
            ("ObjectCreated:Put", "new.txt"): 1,
            ("ObjectRemoved:Delete", "big.bin"): 1,
        }
    )
    [removal] = [obj for name, key, obj in events(db) if key == "big.bin" and "Removed" in name]
    assert set(removal) == {"key", "sequencer"}  # as S3 reports a delete
    shown = eventwire("invocations", "ls", "--json", env=env)
    assert {row["origin"] for row in json.loads(shown.stdout)} == {"notification"}
