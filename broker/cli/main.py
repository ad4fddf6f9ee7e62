"""``eventwire``: the root command, its global flags, and one-line errors."""

from __future__ import annotations

import sys
from typing import Annotated

import click
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
)
from broker.cli.common import err_console
from broker.errors import EventwireError

app = typer.Typer(
    name="eventwire",
    help="Wire events to functions with Lambda's asynchronous semantics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQL store URL [env: EVENTWIRE_DATABASE_URL; default sqlite+aiosqlite:///eventwire.db]",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.meta["overrides"] = {"database_url": database_url}


app.command("serve")(serve.serve)
app.command("migrate")(serve.migrate)
app.command("invoke")(invoke.invoke)
app.command("logs")(logs.logs)
app.add_typer(functions.app, name="functions")
app.add_typer(invocations.app, name="invocations")
app.add_typer(dlq.app, name="dlq")
app.add_typer(schedules.app, name="schedules")
app.add_typer(mappings.app, name="mappings")
app.add_typer(config_cmd.app, name="config")
app.add_typer(destinations.app, name="destinations")


def main() -> None:
    """Entry point: user mistakes print one line and exit 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except EventwireError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (OperationalError, InterfaceError) as exc:  # the store went away or stayed locked
        reason = str(exc.orig or exc).strip().splitlines()[0]
        err_console.print(
            f"[bold red]error:[/] the store did not answer: {reason}; try again",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
