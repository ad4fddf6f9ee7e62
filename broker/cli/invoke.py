"""``eventwire invoke``: run a function now and print its result, or queue it (``--async``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from broker.cli.common import err_console, open_enqueuing, open_store, print_json, run, settings
from broker.config.models import Limits
from broker.errors import UsageError
from broker.functions.invoking import Finished, submit, wait_finished
from broker.loading import load_config
from broker.models import State


def invoke(
    ctx: typer.Context,
    function: Annotated[str, typer.Argument(metavar="FUNCTION", help="The function to invoke.")],
    payload: Annotated[
        str | None, typer.Option("--payload", "-p", metavar="JSON", help="The event, as JSON.")
    ] = None,
    payload_file: Annotated[
        Path | None,
        typer.Option(
            "--payload-file", metavar="FILE", help="Read the event from a file ('-' for stdin)."
        ),
    ] = None,
    asynchronous: Annotated[
        bool, typer.Option("--async", help="Queue it with retries and return its id at once.")
    ] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(metavar="KEY", help="Invocations with the same key run once.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds to wait for a synchronous result.")
    ] = 60.0,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", metavar="FILE", help="Read payload limits from this file."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Invoke FUNCTION with an event (default {}) through the queue.

    Synchronously (the default) it waits for the result and prints it; a
    function error is printed too and exits 1. With --async it prints the
    invocation id at once; retries, destinations and the DLQ then apply.
    """
    options = settings(ctx)
    data = _read_payload(payload, payload_file)
    limits = load_config(config).limits if config else Limits()

    async def go() -> tuple[str, Finished | None]:
        async with open_store(options) as engine, open_enqueuing(options, engine) as queue:
            invocation_id = await submit(
                engine,
                queue,
                function,
                data,
                sync=not asynchronous,
                limits=limits,
                idempotency_key=idempotency_key,
            )
            if asynchronous:
                return invocation_id, None
            return invocation_id, await wait_finished(engine, invocation_id, timeout)

    invocation_id, finished = run(go())
    if asynchronous:
        print_json({"id": invocation_id}) if as_json else typer.echo(invocation_id)
        return
    if finished is None:
        raise UsageError(
            f"invocation {invocation_id} did not finish within {timeout:g}s; it stays queued. "
            "Is `eventwire serve` running against this database?"
        )
    _print_finished(finished, as_json)


def _read_payload(payload: str | None, payload_file: Path | None) -> bytes:
    if payload is not None and payload_file is not None:
        raise UsageError("give either --payload or --payload-file, not both")
    if payload_file is not None:
        if str(payload_file) == "-":
            return sys.stdin.buffer.read()
        try:
            return payload_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"--payload-file {payload_file}: {exc.strerror}") from None
    return (payload if payload is not None else "{}").encode()


def _print_finished(finished: Finished, as_json: bool) -> None:
    if finished.state is State.SUCCEEDED:
        body = json.loads(finished.result) if finished.result else None
        if as_json:
            print_json({"id": finished.id, "state": finished.state.value, "result": body})
        else:
            typer.echo(json.dumps(body, indent=2))
        return
    error = {"errorType": finished.error_type, "errorMessage": finished.error_message}
    if as_json:
        print_json({"id": finished.id, "state": finished.state.value, "error": error})
    else:
        typer.echo(json.dumps(error, indent=2))
        err_console.print(
            Text.assemble(
                ("function error", "red"),
                f" {finished.error_type}: {finished.error_message} (invocation {finished.id})",
            ),
        )
    raise typer.Exit(1)
