"""Every command's ``--help`` names what each value is (``FUNCTION``, ``FILE``, ``DURATION``),
never a Python type (``<str>``, ``<bool>``, ``<list[str]>``)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import typer.main
from typer.testing import CliRunner

from broker.cli.main import app
from tests.support.processes import clean_env, eventwire

PYTHON_TYPE = re.compile(r"<[a-z][\w\[\]|., ]*>")
METAVAR = re.compile(r"[A-Z][A-Z0-9_:|.]*")


def command_paths() -> Iterator[tuple[list[str], object]]:
    def walk(command: object, path: list[str]) -> Iterator[tuple[list[str], object]]:
        yield path, command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


PATHS = [path for path, _ in command_paths()]


def help_of(path: list[str]) -> str:
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert done.exit_code == 0, done.output
    return done.output


def test_every_command_is_covered() -> None:
    assert len(PATHS) > 30
    assert ["dlq", "redrive"] in PATHS and ["schedules", "next"] in PATHS


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "eventwire" for p in PATHS])
def test_help_names_values_not_types(path: list[str]) -> None:
    text = help_of(path)
    assert not PYTHON_TYPE.findall(text), text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "eventwire" for p in PATHS])
def test_every_value_has_a_metavar(path: list[str]) -> None:
    """A parameter that takes a value says what in capitals; a flag shows nothing."""
    command = _command(path)
    for param in command.params:  # type: ignore[attr-defined]
        if getattr(param, "is_flag", False):
            continue
        assert param.metavar and METAVAR.fullmatch(param.metavar), (path, param.name)


def _command(path: list[str]) -> object:
    for found, command in command_paths():
        if found == path:
            return command
    raise AssertionError(path)


def test_version() -> None:
    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0
    assert re.fullmatch(r"eventwire \d+\.\d+\.\d+\S*\n", done.output), done.output


def test_shell_completion_completes_commands() -> None:
    """What the script ``eventwire --install-completion`` installs asks for (bash's form)."""
    env = clean_env(
        _EVENTWIRE_COMPLETE="complete_bash", COMP_WORDS="eventwire dlq re", COMP_CWORD="2"
    )
    done = eventwire(env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["redrive"]
