"""The http invoker against a real HTTP server on loopback, started by each test."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from broker.config.models import FunctionConfig
from broker.functions.invoker import InvokeRequest, InvokerInitError
from broker.http.headers import expand_headers, retry_after_s
from broker.models import FunctionError, Outcome, Success, SystemFault
from invokers.http import HttpInvoker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.handler: Handler = self._ok
        self.url = ""

    async def _ok(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((dict(request.headers), await request.read()))
        return await self.handler(request)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    app = web.Application()
    app.router.add_post("/invoke", state.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/invoke"
    try:
        yield state
    finally:
        await runner.cleanup()


async def invoke(
    url: str,
    payload: Any = None,
    function_timeout: str = "2s",
    traceparent: str | None = None,
    **kw: Any,
) -> Outcome:
    config = FunctionConfig.model_validate(
        {"invoker": "http", "url": url, "timeout": function_timeout, **kw}
    )
    invoker = HttpInvoker("webhook", config)
    await invoker.start()
    try:
        return await invoker.invoke(
            InvokeRequest(
                request_id="req-1",
                invocation_id="inv-1",
                function="webhook",
                function_arn="arn:aws:lambda:local:000000000000:function:webhook",
                payload=json.dumps(payload if payload is not None else {"order": 7}).encode(),
                deadline=datetime.now(UTC) + config.timeout_s * timedelta(seconds=1),
                attempt=2,
                traceparent=traceparent,
            )
        )
    finally:
        await invoker.close()


def respond(status: int = 200, body: str = "", **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, headers=headers)

    return handler


async def test_the_event_is_posted_as_json_and_a_json_answer_is_the_result(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDER_TOKEN", "s3cret")
    outcome = await invoke(server.url, headers={"Authorization": "Bearer ${ORDER_TOKEN}"})
    assert outcome == Success(b'{"ok": true}')
    headers, body = server.seen[0]
    assert json.loads(body) == {"order": 7}
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert (headers["X-Eventwire-Request-Id"], headers["X-Eventwire-Attempt"]) == ("req-1", "2")


async def test_a_text_answer_becomes_a_json_string_and_an_empty_one_null(server: Server) -> None:
    server.handler = respond(200, "thanks")
    assert await invoke(server.url) == Success(b'"thanks"')
    server.handler = respond(204)
    assert await invoke(server.url) == Success(b"null")


async def test_lambda_error_documents_are_function_errors(server: Server) -> None:
    document = {"errorType": "OrderError", "errorMessage": "no stock", "stackTrace": ["at x"]}
    server.handler = respond(200, json.dumps(document))
    assert await invoke(server.url) == FunctionError("OrderError", "no stock", ("at x",))
    server.handler = respond(200, '"boom"', **{"X-Amz-Function-Error": "Unhandled"})
    assert await invoke(server.url) == FunctionError("Unhandled", '"boom"')


@pytest.mark.parametrize("status", [429, 503])
async def test_throttles_carry_retry_after(server: Server, status: int) -> None:
    server.handler = respond(status, "slow down", **{"Retry-After": "7"})
    outcome = await invoke(server.url)
    assert isinstance(outcome, SystemFault)
    assert (outcome.error_type, outcome.retry_after_s) == ("Throttled", 7.0)


async def test_server_errors_are_system_faults_and_client_errors_function_errors(
    server: Server,
) -> None:
    server.handler = respond(500, "it broke")
    outcome = await invoke(server.url)
    assert isinstance(outcome, SystemFault) and outcome.error_type == "Http.ServerError"
    assert "it broke" in outcome.message
    server.handler = respond(404, "no such hook")
    outcome = await invoke(server.url)
    assert isinstance(outcome, FunctionError) and outcome.error_type == "Http.404"


async def test_a_refused_connection_is_a_system_fault() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = await invoke(f"http://127.0.0.1:{port}/invoke")
    assert isinstance(outcome, SystemFault) and outcome.error_type == "Http.ConnectionError"


async def test_no_answer_by_the_timeout_is_task_timed_out(server: Server) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    server.handler = slow
    outcome = await invoke(server.url, function_timeout="300ms")
    release.set()
    assert outcome == FunctionError("Task.TimedOut", "Task timed out after 0.30 seconds")


async def test_a_missing_header_variable_stops_the_start(server: Server) -> None:
    config = FunctionConfig.model_validate(
        {"invoker": "http", "url": server.url, "headers": {"X-Token": "${NOT_SET_ANYWHERE}"}}
    )
    invoker = HttpInvoker("webhook", config)
    with pytest.raises(InvokerInitError, match="header X-Token: environment variable "):
        await invoker.start()
    await invoker.close()


def test_header_expansion_and_retry_after_parsing() -> None:
    assert expand_headers({"A": "x ${B} ${B}"}, {"B": "1"}) == {"A": "x 1 1"}
    assert retry_after_s("120") == 120.0
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert retry_after_s("Tue, 24 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


async def test_a_traced_attempt_sends_its_traceparent_and_lambdas_trace_header(
    server: Server,
) -> None:
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert isinstance(await invoke(server.url), Success)
    assert isinstance(await invoke(server.url, traceparent=f"00-{trace}-{span}-01"), Success)
    (untraced, _), (traced, _) = server.seen
    assert "traceparent" not in untraced and "X-Amzn-Trace-Id" not in untraced
    assert traced["traceparent"] == f"00-{trace}-{span}-01"
    assert traced["X-Amzn-Trace-Id"] == f"Root=1-{trace[:8]}-{trace[8:]};Parent={span};Sampled=1"
