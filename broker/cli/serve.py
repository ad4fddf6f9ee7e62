"""``eventwire serve`` and ``eventwire migrate``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from broker.aio import loop
from broker.cli.common import console, run, settings
from broker.loading import load_config
from broker.observability import logs
from broker.observability.trace_config import from_environment
from broker.service import Service
from broker.store.engine import UNREACHABLE, create_engine, unusable
from broker.store.migrate import current_revision, upgrade

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="Configuration file [env: EVENTWIRE_CONFIG; default eventwire.yaml]",
        show_default=False,
    ),
]


def serve(
    ctx: typer.Context,
    config: ConfigOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            metavar="COUNT",
            help="Invocations run at once by this process [env: EVENTWIRE_CONCURRENCY]",
        ),
    ] = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Upgrade an out-of-date PostgreSQL schema first.")
    ] = False,
    shutdown_grace: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION", help="How long running invocations may finish on stop, e.g. 30s."
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(metavar="LEVEL", help="DEBUG, INFO, WARNING …")
    ] = None,
    log_format: Annotated[str | None, typer.Option(metavar="FORMAT", help="text or json")] = None,
    roles: Annotated[
        str | None,
        typer.Option(
            metavar="ROLES",
            help="What this process runs, comma-separated: api, dispatch, pollers, "
            "scheduler [env: EVENTWIRE_ROLES; default all]",
            show_default=False,
        ),
    ] = None,
    api_listen: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Answer Lambda's Invoke API on host:port, e.g. 127.0.0.1:9001 "
            "[env: EVENTWIRE_API_LISTEN; default off]",
            show_default=False,
        ),
    ] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Answer GET /metrics (Prometheus) on host:port, besides the API listener "
            "[env: EVENTWIRE_METRICS_LISTEN; default off]",
            show_default=False,
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Let the API listen beyond loopback with no api.keys: anyone who reaches "
            "it may invoke every function [env: EVENTWIRE_ALLOW_UNAUTHENTICATED]",
        ),
    ] = False,
) -> None:
    """Run the configured functions, mappings and schedules until SIGINT/SIGTERM."""
    ctx.find_root().meta["overrides"].update(
        config=config,
        concurrency=concurrency,
        roles=roles,
        api_listen=api_listen,
        metrics_listen=metrics_listen,
        allow_unauthenticated=allow_unauthenticated or None,
        shutdown_grace=shutdown_grace,
        log_level=log_level,
        log_format=log_format,
    )
    options = settings(ctx)
    project = load_config(options.config)
    logs.configure(options.log_level, options.log_format)
    if options.metrics_listen is None and project.metrics.listen is not None:
        options = options.model_copy(update={"metrics_listen": project.metrics.listen})
    if project.tracing is not None:
        # The file's tracing section, as the OTEL_* variables the SDK reads itself (from
        # this process's environment); those set outside win.
        for name, value in project.tracing.environment(os.environ).items():
            os.environ.setdefault(name, value)
    tracing = from_environment(os.environ)
    service = Service(
        options,
        project,
        config_path=options.config,
        migrate=migrate,
        tune_gc=True,
        tracing=tracing,
    )
    loop.run(service.run())


def migrate(ctx: typer.Context) -> None:
    """Bring the database schema up to date (creating the database file for SQLite)."""
    options = settings(ctx)

    async def go() -> str | None:
        engine = create_engine(options.database_url)
        try:
            await upgrade(engine)
            return await current_revision(engine)
        except UNREACHABLE as exc:
            raise unusable(options.database_url, exc) from None
        finally:
            await engine.dispose()

    console.print(f"database schema is at revision {run(go())}")
