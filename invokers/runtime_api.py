"""The Lambda Runtime API, served on loopback to the processes of a pool.

A runtime written for Lambda's custom runtime interface asks
``GET /2018-06-01/runtime/invocation/next`` for work (the request blocks
until there is some), then answers with ``POST …/invocation/{id}/response``
or ``…/invocation/{id}/error``; a runtime that cannot start says so with
``POST …/runtime/init/error``. Each worker process is given its own port
(``AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT``): the port a request arrives on
says which process is asking, which is how a crash is pinned on the
invocation that process held.

aiohttp serves it: its C HTTP parser keeps the overhead per invocation well
under a millisecond, and one application listens on any number of sockets.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Final, Protocol

from broker.errors import ConfigError

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - depends on the installation
    raise ConfigError(
        "the process invoker needs aiohttp: pip install 'eventwire[process]'"
    ) from None

PREFIX: Final = "/2018-06-01/runtime"
RESPONSE_TOO_LARGE: Final = "Function.ResponseSizeTooLarge"


@dataclass(frozen=True, slots=True)
class Work:
    """One invocation as ``/invocation/next`` hands it to a runtime."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    client_context: str | None = None


class RuntimeGone(Exception):
    """The worker was stopped while its runtime waited for work."""


class Runtime(Protocol):
    """One worker process, as the Runtime API sees it."""

    async def next(self) -> Work:
        """Block until there is work; raises :class:`RuntimeGone` when the worker stops."""
        ...

    def respond(self, request_id: str, body: bytes) -> bool:
        """The invocation's response; False when ``request_id`` is not the one it holds."""
        ...

    def fail(self, request_id: str, error_type: str | None, body: bytes) -> bool:
        """The invocation's error (``error_type`` from ``Lambda-Runtime-Function-Error-Type``)."""
        ...

    def init_failed(self, error_type: str | None, body: bytes) -> None: ...


class Listener:
    """One worker's socket; ``address`` is what ``AWS_LAMBDA_RUNTIME_API`` is set to."""

    def __init__(self, site: web.SockSite, port: int) -> None:
        self.site = site
        self.port = port
        self.address = f"127.0.0.1:{port}"


class RuntimeApiServer:
    """The Runtime API for the workers of one pool; each worker gets its own listener."""

    def __init__(self, *, max_response_bytes: int) -> None:
        self.max_response_bytes = max_response_bytes
        self._runtimes: dict[int, Runtime] = {}
        app = web.Application(client_max_size=max_response_bytes)
        app.router.add_get(f"{PREFIX}/invocation/next", self._next)
        app.router.add_post(f"{PREFIX}/invocation/{{id}}/response", self._response)
        app.router.add_post(f"{PREFIX}/invocation/{{id}}/error", self._error)
        app.router.add_post(f"{PREFIX}/init/error", self._init_error)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.0
        )
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self._runner.setup()
            self._started = True

    async def listen(self, runtime: Runtime) -> Listener:
        """A new loopback port (chosen by the kernel) serving ``runtime``."""
        await self.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._runtimes[port] = runtime
        return Listener(site, port)

    async def unlisten(self, listener: Listener) -> None:
        self._runtimes.pop(listener.port, None)
        await listener.site.stop()

    async def close(self) -> None:
        self._runtimes.clear()
        if self._started:
            await self._runner.cleanup()
            self._started = False

    # ------------------------------------------------------------ handlers

    def _runtime(self, request: web.Request) -> Runtime:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        runtime = self._runtimes.get(int(sockname[1])) if sockname else None
        if runtime is None:
            raise web.HTTPGone(text=_error_json("Runtime.Gone", "this worker has been stopped"))
        return runtime

    async def _next(self, request: web.Request) -> web.Response:
        runtime = self._runtime(request)
        try:
            work = await runtime.next()
        except RuntimeGone:
            raise web.HTTPGone(
                text=_error_json("Runtime.Gone", "this worker has been stopped")
            ) from None
        headers = {
            "Lambda-Runtime-Aws-Request-Id": work.request_id,
            "Lambda-Runtime-Deadline-Ms": str(work.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": work.function_arn,
            "Lambda-Runtime-Trace-Id": work.trace_id,
        }
        if work.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = work.client_context
        return web.Response(body=work.payload, headers=headers, content_type="application/json")

    async def _response(self, request: web.Request) -> web.Response:
        runtime = self._runtime(request)
        request_id = request.match_info["id"]
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = (
                "Response payload size exceeded maximum allowed payload size "
                f"({self.max_response_bytes} bytes)."
            )
            runtime.fail(
                request_id, RESPONSE_TOO_LARGE, _error_json(RESPONSE_TOO_LARGE, message).encode()
            )
            return web.Response(
                status=413, text=_error_json(RESPONSE_TOO_LARGE, message), content_type=_JSON
            )
        return _accepted(runtime.respond(request_id, body), request_id)

    async def _error(self, request: web.Request) -> web.Response:
        runtime = self._runtime(request)
        request_id = request.match_info["id"]
        body = await _read_capped(request)
        error_type = request.headers.get("Lambda-Runtime-Function-Error-Type")
        return _accepted(runtime.fail(request_id, error_type, body), request_id)

    async def _init_error(self, request: web.Request) -> web.Response:
        runtime = self._runtime(request)
        body = await _read_capped(request)
        runtime.init_failed(request.headers.get("Lambda-Runtime-Function-Error-Type"), body)
        return web.Response(status=202, text='{"status":"OK"}', content_type=_JSON)


_JSON: Final = "application/json"
_ERROR_BODY_CAP: Final = 256 * 1024


async def _read_capped(request: web.Request) -> bytes:
    """An error report's body; one past the server's size limit is cut, not refused."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return await request.content.read(_ERROR_BODY_CAP)


def _accepted(ok: bool, request_id: str) -> web.Response:
    if ok:
        return web.Response(status=202, text='{"status":"OK"}', content_type=_JSON)
    message = f"request id {request_id} is not the invocation this runtime holds"
    return web.Response(
        status=400, text=_error_json("InvalidRequestID", message), content_type=_JSON
    )


def _error_json(error_type: str, message: str) -> str:
    return json.dumps({"errorType": error_type, "errorMessage": message})
