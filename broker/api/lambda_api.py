"""Lambda's Invoke API over HTTP, so that AWS SDKs and the AWS CLI invoke functions unchanged.

``POST /2015-03-31/functions/{FunctionName}/invocations`` on
``EVENTWIRE_API_LISTEN`` (off unless set; port 0 picks a free one, logged as
``Lambda API: listening on http://…``), served by the ``api`` role::

    aws lambda invoke --endpoint-url http://127.0.0.1:9001 --function-name resize out.json
    boto3.client("lambda", endpoint_url="http://127.0.0.1:9001").invoke(FunctionName="resize")

As in Lambda:

* ``X-Amz-Invocation-Type: RequestResponse`` (the default) enqueues a
  synchronous invocation (no retries), waits for it and answers 200 with the
  function's result; a function error is 200 too, with ``X-Amz-Function-Error:
  Unhandled`` and Lambda's error document as the body.
  ``X-Amz-Log-Type: Tail`` adds ``X-Amz-Log-Result``: the base64 of the last
  4 KB the function logged.
* ``Event`` enqueues an asynchronous invocation (retries, destinations, DLQ)
  and answers 202 once it is durably queued; ``DryRun`` checks the function
  and payload and answers 204.
* The function is a name, ``name:$LATEST`` or a function ARN; Eventwire has
  no versions or aliases, so any other qualifier is not found.
* Errors are Lambda's: 404 ``ResourceNotFoundException``, 400
  ``InvalidRequestContentException`` (not JSON) or
  ``InvalidParameterValueException``, 413 ``RequestTooLargeException``, 503
  ``ServiceException`` when the store cannot take the invocation, each named
  in ``x-amzn-ErrorType``, which the SDKs raise as that exception.

``GET /2015-03-31/functions`` (ListFunctions) and ``GET
/2015-03-31/functions/{FunctionName}`` (GetFunction) describe the registered
functions as Lambda's FunctionConfiguration, for tools that look before they
invoke.

Every answer to an invoke carries ``x-amzn-RequestId`` and ``X-Eventwire-Invocation-Id``
(``eventwire invocations show ID``). ``X-Eventwire-Idempotency-Key`` makes a
repeated call the same invocation.

With ``api.keys`` configured, every call but ``GET /metrics`` must be signed (Signature
Version 4, as SDKs sign: :mod:`broker.api.signatures`) by one of them, and be allowed by
its statements (:mod:`broker.api.access`): ``lambda:InvokeFunction`` and
``lambda:GetFunction`` on the function, ``lambda:ListFunctions``. Without keys the API is
open, and ``serve`` listens only on loopback unless told ``--allow-unauthenticated``.
``api.tls`` serves HTTPS. Function URLs (``/fn/NAME/…``: :mod:`broker.api.function_urls`)
share the listener and check their own ``auth``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.api.access import Access, AccessDenied, RateExceeded, check_exposure, load_access
from broker.api.function_urls import FunctionUrls, public_urls
from broker.api.signatures import Arrived, SignatureError, verify
from broker.api.tls import server_context
from broker.config.api import TlsConfig
from broker.config.models import Limits
from broker.errors import PayloadError, PayloadTooLargeError, UnknownFunctionError, UsageError
from broker.functions.invoking import Finished, check_payload, enqueue_api_call, wait_finished
from broker.http.listen import AppServer
from broker.models import State
from broker.observability.metrics import CONTENT_TYPE_LATEST, Metrics
from broker.observability.tracing import incoming_traceparent
from broker.queue.base import InvocationQueue
from broker.sources.pollers import PollerContext
from broker.store.history import AttemptRow, last_attempt
from broker.store.schema import functions

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - depends on the installed extras
    raise UsageError(
        "the Lambda API (EVENTWIRE_API_LISTEN) needs aiohttp: pip install 'eventwire[http]'"
    ) from None

log = logging.getLogger("eventwire.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN = Access({}, {})

PATH = "/2015-03-31/functions/{name}/invocations"
LOG_TAIL_BYTES = 4096
WAIT_SLACK_S = 60.0
"""A synchronous call waits this long past the function's timeout for its invocation
to be leased, run and settled before answering 504 (the invocation stays queued)."""
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


def create(context: PollerContext) -> LambdaApi:
    """The Lambda API on ``EVENTWIRE_API_LISTEN`` (the poller registry asks only when set)."""
    listen = context.settings.api_listen
    assert listen is not None
    access = load_access(context.config.api, os.environ)
    public = public_urls(context.config.functions)
    check_exposure(listen, access, context.settings.allow_unauthenticated, public=public)
    return LambdaApi(
        context.engine,
        context.queue,
        context.config.limits,
        listen,
        context.settings.function_arn,
        context.metrics,
        access=access,
        tls=context.config.api.tls,
    )


class LambdaApi(AppServer):
    """The HTTP server of Lambda's Invoke API (run by ``serve`` like a poller)."""

    name = "lambda-api"

    def __init__(
        self,
        engine: AsyncEngine,
        queue: InvocationQueue,
        limits: Limits,
        listen: str,
        arn: Callable[[str], str],
        metrics: Metrics | None = None,
        *,
        access: Access = OPEN,
        tls: TlsConfig | None = None,
    ) -> None:
        super().__init__(listen)
        self.access = access
        self.tls = tls
        self.metrics = metrics or Metrics()
        self.engine = engine
        self.queue = queue
        self.limits = limits
        self.arn = arn

    async def start(self) -> None:
        urls = FunctionUrls(self.engine, self.queue, self.limits, self.access, self.arn)
        app = web.Application(
            client_max_size=self.limits.sync_payload_bytes + 1,
            middlewares=[urls.middleware, self._bounded, self._signed],  # /fn/…: own auth
        )
        app.router.add_post(PATH, self._invoke)
        app.router.add_get("/2015-03-31/functions", self._list)
        app.router.add_get("/2015-03-31/functions/", self._list)
        app.router.add_get("/2015-03-31/functions/{name}", self._get)
        app.router.add_get("/metrics", self._metrics)
        tls = None if self.tls is None else server_context(self.tls, "api.tls")
        await self.serve(app, "EVENTWIRE_API_LISTEN", tls=tls)
        log.info("Lambda API: listening on %s%s", self.url, PATH.format(name="{name}"))

    @web.middleware
    async def _bounded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What no operation takes, answered at once as Lambda answers it: a body declared
        larger than any payload (before it is read), and paths and methods of operations
        Eventwire does not serve."""
        limit = self.limits.sync_payload_bytes
        if request.content_length is not None and request.content_length > limit:
            return _too_large(request.content_length, limit)
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            operation = unknown_operation(request.method, request.path)
            # 404, not a 5xx: an SDK would retry a 5xx, and this answer will not change.
            return _error(
                404,
                "UnknownOperationException",
                f"{request.method} {request.path}: "
                + (
                    "no such operation"
                    if operation is None
                    else f"{operation} is a Lambda operation Eventwire does not serve"
                ),
            )

    @web.middleware
    async def _signed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With keys: the request's signature checked, and its action allowed to its key."""
        if self.access.open or request.path == "/metrics":
            return await handler(request)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(request.content_length, self.limits.sync_payload_bytes)
        arrived = Arrived(
            method=request.method,
            scheme=request.scheme,
            target=request.raw_path,
            headers={
                name.lower(): ",".join(request.headers.getall(name)) for name in request.headers
            },
            body=body,
        )
        try:
            key_id = verify(arrived, self.access.secrets, datetime.now(UTC))
        except SignatureError as exc:
            log.info("Lambda API: refused %s %s: %s", request.method, request.path, exc.code)
            return _error(exc.status, exc.code, str(exc))
        try:
            self.access.admit(key_id)
        except RateExceeded as exc:
            return _error(
                429,
                "TooManyRequestsException",
                str(exc),
                {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            )
        action, function = _action(request)
        if action is not None:
            try:
                self.access.authorize(
                    key_id, action, function, self.arn(function) if function else "*"
                )
            except AccessDenied as exc:
                return _error(403, "AccessDeniedException", str(exc))
        return await handler(request)

    async def _metrics(self, request: web.Request) -> web.Response:
        """This process's figures in the Prometheus text format."""
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _list(self, request: web.Request) -> web.Response:
        rows = await _registered(self.engine)
        return web.json_response({"Functions": [self._configuration(row) for row in rows]})

    async def _get(self, request: web.Request) -> web.Response:
        try:
            row = await _function(
                self.engine,
                function_name(request.match_info["name"], request.query.get("Qualifier")),
            )
        except UnknownFunctionError as exc:
            return _error(404, "ResourceNotFoundException", str(exc))
        answer: dict[str, Any] = {
            "Configuration": self._configuration(row),
            "Code": {"RepositoryType": "Eventwire"},
        }
        if row.reserved_concurrency is not None:
            answer["Concurrency"] = {"ReservedConcurrentExecutions": row.reserved_concurrency}
        return web.json_response(answer)

    def _configuration(self, row: Row[Any]) -> dict[str, Any]:
        """Lambda's FunctionConfiguration of a registered function, as far as it applies."""
        config: dict[str, Any] = row.config or {}
        updated = row.updated_at.astimezone(UTC)
        configuration: dict[str, Any] = {
            "FunctionName": row.name,
            "FunctionArn": self.arn(row.name),
            "Timeout": math.ceil(row.timeout_s),
            "LastModified": updated.strftime("%Y-%m-%dT%H:%M:%S.")
            + f"{updated.microsecond // 1000:03d}+0000",
            "Version": "$LATEST",
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Description": f"eventwire {row.invoker} function",
        }
        if config.get("handler"):
            configuration["Handler"] = config["handler"]
            configuration["Runtime"] = f"python{sys.version_info.major}.{sys.version_info.minor}"
        elif row.invoker != "python":
            configuration["Runtime"] = "provided"
        if config.get("memory"):
            configuration["MemorySize"] = config["memory"]
        return configuration

    async def _invoke(self, request: web.Request) -> web.Response:
        kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind not in INVOCATION_TYPES:
            return _error(
                400,
                "InvalidParameterValueException",
                f"X-Amz-Invocation-Type {kind!r}: expected one of {', '.join(INVOCATION_TYPES)}",
            )
        sync = kind != "Event"
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(request.content_length, self.limits.sync_payload_bytes)
        payload = body or b"{}"
        try:
            name = function_name(request.match_info["name"], request.query.get("Qualifier"))
            row = await _function(self.engine, name)
            timeout_s = float(row.timeout_s)
            check_payload(payload, sync=sync, limits=self.limits)
            if kind == "DryRun":
                return web.Response(status=204)
            reserved = row.reserved_concurrency
            if sync and reserved is not None:
                running = await self.queue.running(name, datetime.now(UTC))
                if running >= reserved:
                    return _throttled(name, reserved)
            key = request.headers.get("X-Eventwire-Idempotency-Key") or None
            invocation_id = await enqueue_api_call(
                self.queue,
                name,
                payload,
                sync=sync,
                idempotency_key=key,
                traceparent=incoming_traceparent(request.headers),
            )
        except UnknownFunctionError as exc:
            return _error(404, "ResourceNotFoundException", str(exc))
        except PayloadTooLargeError as exc:
            return _error(413, "RequestTooLargeException", str(exc))
        except PayloadError as exc:
            return _error(400, "InvalidRequestContentException", str(exc))
        except Exception as exc:  # the store or queue cannot take it: the caller may try again
            log.error(
                "Lambda API: could not enqueue an invocation of %s (%s)",
                request.match_info["name"],
                exc,
            )
            return _error(503, "ServiceException", "could not store the invocation; try again")
        ids = {"x-amzn-RequestId": invocation_id, "X-Eventwire-Invocation-Id": invocation_id}
        if not sync:
            return web.Response(status=202, headers=ids)
        finished = await wait_finished(self.engine, invocation_id, timeout_s + WAIT_SLACK_S)
        if finished is None:
            return _error(
                504,
                "ServiceException",
                f"invocation {invocation_id} did not finish in time; it stays queued",
                ids,
            )
        return await self._answer(finished, request, ids)

    async def _answer(
        self, finished: Finished, request: web.Request, ids: dict[str, str]
    ) -> web.Response:
        headers = {**ids, "X-Amz-Executed-Version": "$LATEST"}
        tail = request.headers.get("X-Amz-Log-Type") == "Tail"
        last: AttemptRow | None = None
        if tail or finished.state is not State.SUCCEEDED:  # the last attempt has the rest
            last = await last_attempt(self.engine, finished.id)
        if tail:
            logged = (last.log_excerpt or "") if last is not None else ""
            headers["X-Amz-Log-Result"] = base64.b64encode(
                logged.encode()[-LOG_TAIL_BYTES:]
            ).decode()
        if finished.state is State.SUCCEEDED:
            body = finished.result if finished.result is not None else b"null"
        else:
            headers["X-Amz-Function-Error"] = "Unhandled"
            document: dict[str, Any] = {
                "errorMessage": finished.error_message,
                "errorType": finished.error_type,
                "requestId": finished.id,
                "stackTrace": list(last.error_trace) if last is not None else [],
            }
            body = json.dumps(document).encode()
        return web.Response(status=200, body=body, headers=headers, content_type="application/json")


_FN = r"^/\d{4}-\d\d-\d\d/functions/[^/]+"
_OPERATIONS = (
    ("GET", _FN + r"/configuration/?$", "GetFunctionConfiguration"),
    ("PUT", _FN + r"/configuration/?$", "UpdateFunctionConfiguration"),
    ("GET", _FN + r"/versions/?$", "ListVersionsByFunction"),
    ("POST", _FN + r"/versions/?$", "PublishVersion"),
    ("GET", _FN + r"/aliases/?$", "ListAliases"),
    ("POST", _FN + r"/aliases/?$", "CreateAlias"),
    ("GET", _FN + r"/aliases/[^/]+/?$", "GetAlias"),
    ("PUT", _FN + r"/aliases/[^/]+/?$", "UpdateAlias"),
    ("DELETE", _FN + r"/aliases/[^/]+/?$", "DeleteAlias"),
    ("GET", _FN + r"/concurrency/?$", "GetFunctionConcurrency"),
    ("PUT", _FN + r"/concurrency/?$", "PutFunctionConcurrency"),
    ("DELETE", _FN + r"/concurrency/?$", "DeleteFunctionConcurrency"),
    ("GET", _FN + r"/event-invoke-config/?$", "GetFunctionEventInvokeConfig"),
    ("PUT", _FN + r"/event-invoke-config/?$", "PutFunctionEventInvokeConfig"),
    ("POST", _FN + r"/event-invoke-config/?$", "UpdateFunctionEventInvokeConfig"),
    ("GET", _FN + r"/url/?$", "GetFunctionUrlConfig"),
    ("POST", _FN + r"/response-streaming-invocations/?$", "InvokeWithResponseStream"),
    ("GET", r"^/2015-03-31/event-source-mappings/?$", "ListEventSourceMappings"),
    ("GET", r"^/2015-03-31/event-source-mappings/[^/]+/?$", "GetEventSourceMapping"),
    ("PUT", r"^/2015-03-31/event-source-mappings/[^/]+/?$", "UpdateEventSourceMapping"),
    ("GET", r"^/2016-08-19/account-settings/?$", "GetAccountSettings"),
)
"""Lambda operations Eventwire does not serve (yet), for an error that names them."""


def unknown_operation(method: str, path: str) -> str | None:
    """The Lambda operation ``method path`` is, if it is one this API does not serve."""
    for verb, pattern, operation in _OPERATIONS:
        if verb == method and re.match(pattern, path):
            return operation
    return None


def _action(request: web.Request) -> tuple[str | None, str | None]:
    """The action a request takes and the function it takes it on (None: none, or a name
    the handler will refuse as not found)."""
    name = request.match_info.get("name")
    function = None
    if name is not None:
        try:
            function = function_name(name, request.query.get("Qualifier"))
        except UnknownFunctionError:
            function = name
    if request.method == "POST" and name is not None:
        return "lambda:InvokeFunction", function
    if request.method == "GET" and name is not None:
        return "lambda:GetFunction", function
    if request.method == "GET" and request.path.rstrip("/") == "/2015-03-31/functions":
        return "lambda:ListFunctions", None
    return None, None


def function_name(given: str, qualifier: str | None) -> str:
    """The function a request names: ``name``, ``name:qualifier`` or a function ARN
    (``arn:aws:lambda:region:account:function:name[:qualifier]``); any qualifier but
    ``$LATEST`` is not found."""
    name = given
    if given.startswith("arn:"):
        _, found, name = given.partition(":function:")
        if not found:
            raise UnknownFunctionError(f"{given!r} is not a function ARN")
    name, _, suffix = name.partition(":")
    for wanted in (suffix, qualifier):
        if wanted and wanted != "$LATEST":
            raise UnknownFunctionError(
                f"function not found: {name}:{wanted} (Eventwire functions have no versions "
                "or aliases; use $LATEST or none)"
            )
    return name


async def _registered(engine: AsyncEngine, name: str | None = None) -> list[Row[Any]]:
    """The registered functions (the one named ``name``), by name."""
    f = functions.c
    query = select(
        f.name, f.invoker, f.config, f.timeout_s, f.reserved_concurrency, f.updated_at
    ).order_by(f.name)
    if name is not None:
        query = query.where(f.name == name)
    async with engine.connect() as conn:
        rows: list[Row[Any]] = list(await conn.execute(query))
        await conn.rollback()
    return rows


async def _function(engine: AsyncEngine, name: str) -> Row[Any]:
    """The registered function ``name``."""
    found = await _registered(engine, name)
    if not found:
        raise UnknownFunctionError(f"function not found: {name}")
    return found[0]


def _throttled(function: str, reserved: int) -> web.Response:
    """Lambda's answer to a synchronous call of a function at its reserved concurrency: 429,
    to be tried again (an asynchronous call is queued instead, and waits its turn)."""
    return web.json_response(
        {
            "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
            "Type": "User",
            "message": f"Rate Exceeded: {function} is running {reserved} invocations, its "
            "reserved concurrency",
        },
        status=429,
        headers={"x-amzn-ErrorType": "TooManyRequestsException", "Retry-After": "1"},
    )


def _too_large(size: int | None, limit: int) -> web.Response:
    shown = f"{size:,} bytes" if size is not None else "larger"
    return _error(
        413,
        "RequestTooLargeException",
        f"request payload is {shown}; the limit for synchronous invocations is {limit:,} bytes",
    )


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An error as Lambda answers it: the SDKs raise ``code`` with ``message``."""
    return web.json_response(
        {"Type": "User", "message": message},
        status=status,
        headers={**(headers or {}), "x-amzn-ErrorType": code},
    )
