"""``/metrics`` as Prometheus reads it: each figure equals what ``serve`` did.

One ``serve`` runs a function that succeeds (in process and in a process pool),
one that fails and is retried, one that fails with no retry, and one that runs
past its timeout; the last three end in the DLQ. The test invokes them through the
CLI, waits for each invocation to end, then parses ``--metrics-listen`` and the API
listener's ``/metrics`` with ``prometheus_client.parser``.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.metrics import METRICS_URL, Samples, parse, value
from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.services import free_port
from tests.support.stores import Store, store_for

CONFIG = """
functions:
  ok:
    handler: tests.handlers:echo
  pooled:
    invoker: process
    handler: tests.runtime_handlers:echo
    warm: 1
  kept:
    handler: tests.handlers:boom
    retry: {max_attempts: 2, backoff: {initial: 100ms}}
  lost:
    handler: tests.handlers:boom
    retry: {max_attempts: 1}
  late:
    handler: tests.handlers:slow_async
    timeout: 200ms
    retry: {max_attempts: 1}
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for("sqlite", tmp_path) as value:
        yield value


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return parse(answer.read().decode())


def invoke(function: str, env: dict[str, str]) -> str:
    queued = eventwire("invoke", function, "--async", "--payload", '{"n": 1}', env=env)
    assert queued.returncode == 0, queued.stderr
    return queued.stdout.strip()


def finished(id: str, env: dict[str, str]) -> bool:
    shown = eventwire("invocations", "show", id, "--json", env=env)
    return shown.returncode == 0 and json.loads(shown.stdout)["state"] in ("succeeded", "failed")


def test_metrics_count_what_serve_did(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(**store.env(), EVENTWIRE_API_LISTEN="127.0.0.1:0")
    serve = Serve(config, env, tmp_path / "serve.log", "--metrics-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        metrics_url = serve.logged(METRICS_URL, "the metrics URL")
        api_url = serve.logged(r"Lambda API: listening on (http://[^/\s]+)", "the API URL")
        before = scrape(metrics_url)
        assert value(before, "eventwire_invocations_total", function="ok") == 0
        for id in [invoke(f, env) for f in ("ok", "ok", "pooled", "kept", "lost", "late")]:
            wait_for(lambda: finished(id, env), 60, f"invocation {id} to finish")  # noqa: B023

        after = scrape(metrics_url)

        def got(name: str, **labels: str) -> float:
            return value(after, name, **labels)

        invocations, errors = "eventwire_invocations_total", "eventwire_errors_total"
        assert got(invocations, function="ok") == 2
        assert got(invocations, function="pooled") == 1
        assert got(invocations, function="kept") == 2  # the first attempt and its retry
        assert got(invocations, function="lost") == 1
        assert got(invocations, function="late") == 1

        assert got(errors, function="ok", reason="error") == 0
        assert got(errors, function="kept", reason="error") == 2
        assert got(errors, function="lost", reason="error") == 1
        assert got(errors, function="late", reason="timeout") == 1
        assert got(errors, function="late", reason="error") == 0

        dropped = "eventwire_async_events_dropped_total"
        assert got("eventwire_retries_total", function="kept") == 1
        assert got("eventwire_retries_total", function="lost") == 0
        # Given up: each counts as dropped (Lambda's meaning) and is kept in the DLQ.
        for function in ("kept", "lost", "late"):
            assert got(dropped, function=function, reason="retries_exhausted") == 1
            assert got(dropped, function=function, reason="max_event_age") == 0
            assert got("eventwire_dead_letters_total", function=function) == 1
        assert got(dropped, function="ok", reason="retries_exhausted") == 0
        # Each event counts once, at its first attempt, with its origin.
        received = "eventwire_async_events_received_total"
        assert got(received, function="ok", source="api") == 2
        assert got(received, function="kept", source="api") == 1

        # Histograms: an observation per attempt; the timed-out one ran for its timeout
        # (measured by the dispatcher: the deadline was set a moment before it started).
        assert got("eventwire_duration_seconds_count", function="kept") == 2
        assert got("eventwire_duration_seconds_count", function="pooled") == 1
        assert got("eventwire_duration_seconds_sum", function="late") >= 0.19  # its timeout
        assert got("eventwire_duration_seconds_bucket", function="late", le="0.1") == 0
        assert got("eventwire_async_event_age_seconds_count", function="kept") == 2
        for function in ("ok", "pooled", "kept", "lost", "late"):  # nothing runs any more
            assert got("eventwire_concurrent_executions", function=function) == 0

        # The API listener answers the same figures.
        assert value(scrape(f"{api_url}/metrics"), invocations, function="ok") == 2
    finally:
        assert serve.stop() == 0, serve.log()


def test_a_metrics_address_in_use_is_one_clear_line(store: Store, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "eventwire.yaml"
        config.write_text("functions:\n  ok: {handler: tests.handlers:echo}\n")
        env = clean_env(**store.env(), EVENTWIRE_METRICS_LISTEN=f"127.0.0.1:{port}")
        ran = eventwire("serve", "-c", str(config), env=env, timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert f"metrics listen 127.0.0.1:{port}" in ran.stderr


BACKLOG = """
functions:
  queued:
    handler: tests.handlers:slow_async
    timeout: 10s
    reserved_concurrency: 1
  doomed:
    handler: tests.handlers:boom
    retry: {max_attempts: 1}
"""


def test_the_backlog_gauges_rise_and_fall(store: Store, tmp_path: Path) -> None:
    """Three invocations of a function that runs one at a time, 5 s each: the pending
    gauge sees them wait, then none. The DLQ's size counts what another function left."""
    config = tmp_path / "eventwire.yaml"
    config.write_text(BACKLOG)
    env = clean_env(**store.env())
    serve = Serve(config, env, tmp_path / "serve.log", "--metrics-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        url = serve.logged(METRICS_URL, "the metrics URL")
        for _ in range(3):
            invoke("queued", env)
        invoke("doomed", env)

        def backlog() -> tuple[float, float, float]:
            samples = scrape(url)
            return (
                value(samples, "eventwire_pending_invocations", function="queued"),
                value(samples, "eventwire_oldest_pending_age_seconds", function="queued"),
                value(samples, "eventwire_dlq_size", function="doomed"),
            )

        def waiting() -> tuple[float, float, float] | None:
            now = backlog()
            return now if now[0] >= 1 else None

        _, oldest, _ = wait_for(waiting, 30, "invocations seen pending")
        assert oldest > 0
        assert wait_for(lambda: backlog() == (0, 0, 1), 60, "the backlog drained")
        # The queue counts throttles in the store (across processes; one process caps its
        # own leases first); /metrics shows the store's count.
        database = store.settings()["database_url"].removeprefix("sqlite+aiosqlite:///")
        with sqlite3.connect(database) as conn:
            conn.execute("UPDATE functions SET throttles = 7 WHERE name = 'queued'")
        wait_for(
            lambda: value(scrape(url), "eventwire_throttles_total", function="queued") == 7,
            30,
            "the store's throttles",
        )
    finally:
        assert serve.stop() == 0, serve.log()


def test_targets_that_refuse_count_delivery_failures_and_dead_letter_errors(
    store: Store, tmp_path: Path
) -> None:
    webhook = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    config = tmp_path / "eventwire.yaml"
    config.write_text(
        "functions:\n"
        f"  ok:\n    handler: tests.handlers:echo\n    on_success: {webhook}\n"
        f"  failing:\n    handler: tests.handlers:boom\n    dead_letter: {webhook}?dlq\n"
        "    retry: {max_attempts: 1}\n"
    )
    env = clean_env(**store.env())
    serve = Serve(config, env, tmp_path / "serve.log", "--metrics-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        url = serve.logged(METRICS_URL, "the metrics URL")
        invoke("ok", env)
        name = "eventwire_destination_delivery_failures_total"
        wait_for(
            lambda: value(scrape(url), name, destination=webhook) >= 2,
            30,
            "two failed deliveries (the first attempt and a retry)",
        )
        invoke("failing", env)
        wait_for(
            lambda: (
                value(scrape(url), "eventwire_dead_letter_errors_total", function="failing") >= 2
            ),
            30,
            "two failed dead-letter deliveries of failing's event",
        )
        dead_letter = f"{webhook}?dlq"
        assert value(scrape(url), name, destination=dead_letter) == 0, "not a destination"
    finally:
        assert serve.stop() == 0, serve.log()
