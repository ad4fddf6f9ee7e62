"""``eventwire``: the root command, its global flags, and one-line errors."""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Annotated

import typer
from sqlalchemy.exc import InterfaceError, OperationalError

from broker.cli import (
    config_cmd,
    destinations,
    dlq,
    functions,
    invocations,
    invoke,
    logs,
    mappings,
    schedules,
    serve,
    top,
)
from broker.cli.app import App
from broker.cli.common import print_error
from broker.errors import EventwireError

app = App(
    name="eventwire",
    help="Wire events to functions with Lambda's asynchronous semantics.",
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"eventwire {version('eventwire')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help="SQL store URL [env: EVENTWIRE_DATABASE_URL; default sqlite+aiosqlite:///eventwire.db]",
            show_default=False,
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    ctx.meta["overrides"] = {"database_url": database_url}


app.command("serve")(serve.serve)
app.command("migrate")(serve.migrate)
app.command("invoke")(invoke.invoke)
app.command("logs")(logs.logs)
app.command("top")(top.top)
app.add_typer(functions.app, name="functions")
app.add_typer(invocations.app, name="invocations")
app.add_typer(dlq.app, name="dlq")
app.add_typer(schedules.app, name="schedules")
app.add_typer(mappings.app, name="mappings")
app.add_typer(config_cmd.app, name="config")
app.add_typer(destinations.app, name="destinations")


def main(argv: list[str] | None = None) -> None:
    """Entry point (``argv``: the arguments, default ``sys.argv[1:]``). Typer reports a usage
    mistake itself (the usage line and the error, exit 2); the errors Eventwire raises for a
    user to act on print one line, never a traceback."""
    try:
        app(args=argv, prog_name="eventwire")
    except EventwireError as exc:
        print_error(str(exc))
        sys.exit(2)
    except (OperationalError, InterfaceError) as exc:  # the store went away or stayed locked
        reason = str(exc.orig or exc).strip().splitlines()[0]
        print_error(f"the store did not answer: {reason}; try again")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
