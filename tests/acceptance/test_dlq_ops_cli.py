"""``eventwire dlq`` for many failures: filters, dry run, --to, --edit, export/import."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from broker.errors import NotFoundError, UsageError
from broker.store.engine import create_engine
from tests.acceptance.test_cli_admin import NOW, Store, cli, ok, store
from tests.support.processes import clean_env, eventwire
from tests.unit.test_history import add_dead_letter

__all__ = ["store"]  # the fixture


@pytest.fixture
async def timeouts(store: Store) -> list[str]:
    """Three TimeoutError dead letters of "orders" from the last hour, besides the others."""
    engine = create_engine(store.url)
    try:
        return [
            await add_dead_letter(
                engine,
                function="orders",
                dead_at=NOW - timedelta(minutes=10 * i),
                error_type="TimeoutError",
                error_message=f"upstream timed out after {i}s",
                payload=json.dumps({"n": i}).encode(),
            )
            for i in range(1, 4)
        ]
    finally:
        await engine.dispose()


def ids_of(store: Store, *args: str) -> list[str]:
    return [row["id"] for row in json.loads(ok(cli(store, "dlq", "ls", *args, "--json")))]


def test_ls_filters(store: Store, timeouts: list[str]) -> None:
    assert ids_of(store, "orders", "--error-type", "TimeoutError") == timeouts
    assert ids_of(store, "--error-type", "TimeoutError", "--since", "15m") == timeouts[:1]
    assert ids_of(store, "--grep", "AFTER 3S") == timeouts[2:]
    assert ids_of(store, "--before", "1d") == [store.old_letter]
    assert ids_of(store, "--origin", "api", "-e", "ValueError") == [store.letter, store.old_letter]
    assert ids_of(store, "--origin", "schedule") == []
    table = ok(cli(store, "dlq", "ls", "orders", "-e", "TimeoutError", "-n", "2"))
    assert "TimeoutError: upstream timed out after 1s" in table

    bad = cli(store, "dlq", "ls", "--origin", "mail")
    assert isinstance(bad.exception, UsageError)
    assert str(bad.exception).startswith("--origin: unknown origin 'mail'; expected one of: api")
    assert isinstance(cli(store, "dlq", "ls", "--since", "soon").exception, UsageError)


def test_redrive_dry_run_changes_nothing(store: Store, timeouts: list[str]) -> None:
    shown = ok(cli(store, "dlq", "redrive", "orders", "-e", "TimeoutError", "--dry-run"))
    assert "would redrive 3 dead letters; nothing was changed" in shown
    data = json.loads(
        ok(cli(store, "dlq", "redrive", "orders", "-e", "TimeoutError", "--dry-run", "--json"))
    )
    assert data["would_redrive"] == 3
    assert {row["id"] for row in data["dead_letters"]} == set(timeouts)
    assert len(ids_of(store)) == 5  # still there, none redriven


def test_redrive_filtered_to_another_function_once(store: Store, timeouts: list[str]) -> None:
    args = ["dlq", "redrive", "orders", "-e", "TimeoutError", "--since", "25m"]
    args += ["--to", "mail", "--rate", "100/s"]
    first = ok(cli(store, *args))
    assert "redriven 2, already redriven 0 → mail" in first
    again = json.loads(ok(cli(store, *args, "--json")))  # nothing left to select
    assert (again["redriven"], again["already_redriven"]) == (0, 0)
    by_id = json.loads(ok(cli(store, "dlq", "redrive", "--id", timeouts[0], "--json")))
    assert (by_id["redriven"], by_id["already_redriven"]) == (0, 1)

    pending = json.loads(ok(cli(store, "invocations", "ls", "-f", "mail", "--json")))
    redriven = [row for row in pending if row["origin"] == "redrive"]
    assert sorted(row["source"]["dead_letter_id"] for row in redriven) == sorted(timeouts[:2])
    assert {row["source"]["function"] for row in redriven} == {"orders"}
    assert sorted(row["payload"]["n"] for row in redriven) == [1, 2]

    unknown = cli(store, "dlq", "redrive", "orders", "--all", "--to", "nope")
    assert isinstance(unknown.exception, UsageError)
    assert "--to: unknown function 'nope'" in str(unknown.exception)
    assert isinstance(
        cli(store, "dlq", "redrive", "orders", "--all", "--rate", "fast").exception, UsageError
    )


def test_redrive_after_editing_the_event(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('42', '43'))\n"
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    monkeypatch.delenv("VISUAL", raising=False)

    done = ok(cli(store, "dlq", "redrive", store.letter[:13], "--edit"))
    assert "redriven 1" in done
    [row] = [
        r
        for r in json.loads(ok(cli(store, "invocations", "ls", "--json")))
        if r["origin"] == "redrive"
    ]
    assert row["payload"] == {"order": 43} and row["source"]["edited"] is True

    again = cli(store, "dlq", "redrive", store.letter, "--edit")
    assert isinstance(again.exception, UsageError) and "redriven already" in str(again.exception)
    binary = cli(store, "dlq", "redrive", store.old_letter, "--edit")  # b"\xff\x00"
    assert "not UTF-8 JSON and cannot be edited" in str(binary.exception)
    missing = cli(store, "dlq", "redrive", "ffffffff-ffff", "--edit")
    assert isinstance(missing.exception, NotFoundError)


def test_an_edit_that_is_not_json_redrives_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).write_text('{oops')\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    monkeypatch.delenv("VISUAL", raising=False)
    result = cli(store, "dlq", "redrive", "--id", store.letter, "--edit")
    assert isinstance(result.exception, UsageError)
    assert str(result.exception).startswith("the edited event is not JSON")
    assert store.letter in ids_of(store)  # not redriven


def test_export_import_through_the_shell(store: Store, timeouts: list[str], tmp_path: Path) -> None:
    env = clean_env(EVENTWIRE_DATABASE_URL=store.url)
    exported = tmp_path / "failed.jsonl"
    with exported.open("w") as out:  # eventwire dlq export orders > failed.jsonl
        done = subprocess.run(
            [sys.executable, "-m", "broker.cli", "dlq", "export", "orders"],
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert "exported 5 dead letters" in done.stderr
    lines = exported.read_text().splitlines()
    assert len(lines) == 5
    binary = next(json.loads(line) for line in lines if json.loads(line)["id"] == store.old_letter)
    assert binary["payload_base64"] == "/wA="

    elsewhere = tmp_path / "elsewhere.db"
    other = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{elsewhere}")
    assert eventwire("migrate", env=other).returncode == 0
    first = eventwire("dlq", "import", str(exported), "--json", env=other)
    assert json.loads(first.stdout) == {"imported": 5, "already_present": 0}, first.stderr
    second = eventwire("dlq", "import", str(exported), env=other)
    assert "imported 0, already present 5" in second.stdout

    again = eventwire("dlq", "export", "orders", env=other)
    assert again.stdout.splitlines() == lines  # the same bytes, payloads included

    exported.write_text(lines[0] + "\n{not json\n")
    broken = eventwire("dlq", "import", str(exported), env=other)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert f"{exported}:2: not JSON" in broken.stderr


def test_purge_with_filters(store: Store, timeouts: list[str]) -> None:
    purged = json.loads(
        ok(
            cli(
                store,
                *("dlq", "purge", "orders", "--before", "15m", "-e", "TimeoutError"),
                *("--yes", "--json"),
            )
        )
    )
    assert purged["purged"] == 2
    assert ids_of(store, "orders") == [store.letter, timeouts[0], store.old_letter]
