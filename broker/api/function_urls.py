"""Function URLs: plain HTTP requests to ``/fn/NAME/...`` on the API listener invoke
function ``NAME`` with Lambda's function URL event, and its result is the answer.

A request to ``/fn/NAME/a/b?x=1`` (any method), or to ``/a/b?x=1`` with a ``Host`` of
``NAME.lambda-url.<anything>``, reaches a function that has a ``function_url``:

* ``auth: AWS_IAM`` wants it signed (Signature Version 4, service ``lambda``) by one of
  ``api.keys`` allowed ``lambda:InvokeFunctionUrl`` on the function; ``auth: NONE`` lets
  anyone in. With no ``api.keys`` the whole API is open, function URLs too.
* With ``cors``, a browser's preflight is answered from it without invoking, and the
  CORS headers are added to the other answers.
* The event (:func:`broker.events.function_url.url_event`) is invoked synchronously,
  through the queue like an Invoke API call (history, metrics, the ``traceparent`` the
  request came with as parent), and the result is mapped back as Lambda maps it
  (:func:`broker.events.function_url.http_response`): a function error or a result
  that is no HTTP response answers 502, no result within the timeout plus a minute 504.

Every answer from the function carries ``x-amzn-RequestId`` and
``X-Eventwire-Invocation-Id``. Errors of the caller's own are 4xx with a JSON
``Message``: 404 for a function that does not exist or has no ``function_url``, 403
for a missing or wrong signature, 413 for a body over ``limits.sync_payload``, 429 with
``Retry-After`` for a function at its reserved concurrency or a key past its rate limit.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.api.access import Access, AccessDenied, RateExceeded
from broker.api.cors import is_preflight, preflight, response_headers
from broker.api.signatures import Arrived, SignatureError, verify
from broker.config.function_urls import FunctionUrlConfig
from broker.config.models import FunctionConfig, Limits
from broker.errors import PayloadTooLargeError, UsageError
from broker.events.function_url import (
    BadResponse,
    Caller,
    HttpResponse,
    UrlRequest,
    http_response,
    url_event,
)
from broker.functions.invoking import check_payload, enqueue_api_call, wait_finished
from broker.ids import new_id
from broker.models import State
from broker.observability.tracing import incoming_traceparent
from broker.queue.base import InvocationQueue
from broker.store.schema import functions

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - depends on the installed extras
    raise UsageError("function URLs need aiohttp: pip install 'eventwire[http]'") from None

log = logging.getLogger("eventwire.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "/fn/"
HOST_LABEL = ".lambda-url."
"""A ``Host`` of ``NAME.lambda-url.<anything>`` routes to function ``NAME``'s URL."""
ACTION = "lambda:InvokeFunctionUrl"
WAIT_SLACK_S = 60.0
"""As the Invoke API: how long past the function's timeout an answer is waited for."""


@dataclass(frozen=True, slots=True)
class _Registered:
    """What serving a function's URL needs of the registered function."""

    url: FunctionUrlConfig
    timeout_s: float
    reserved_concurrency: int | None


def public_urls(functions: Mapping[str, FunctionConfig]) -> list[str]:
    """The functions whose URL anyone may call (``auth: NONE``)."""
    return [
        name
        for name, function in functions.items()
        if function.function_url is not None and function.function_url.auth == "NONE"
    ]


def target(host: str, raw_path: str) -> tuple[str, str, str] | None:
    """The function a request is for, with the path below its URL and the query string
    (None: the request is not for a function URL)."""
    path, _, query = raw_path.partition("?")
    if path.startswith(PREFIX):
        name, slash, rest = path[len(PREFIX) :].partition("/")
        return unquote(name), slash + rest or "/", query
    if HOST_LABEL in host:
        return host.split(".", 1)[0], path or "/", query
    return None


class FunctionUrls:
    """The middleware that serves function URLs on the Lambda API's listener; every
    other request goes on to the API (and its signature check)."""

    def __init__(
        self,
        engine: AsyncEngine,
        queue: InvocationQueue,
        limits: Limits,
        access: Access,
        arn: Callable[[str], str],
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.limits = limits
        self.access = access
        self.arn = arn

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        found = target(request.host, request.raw_path)
        if found is None:
            return await handler(request)
        name, path, query = found
        return await self._serve(request, name, path, query)

    async def _serve(
        self, request: web.Request, name: str, path: str, query: str
    ) -> web.StreamResponse:
        try:
            found = await self._config(name)
        except Exception as exc:  # the store cannot answer: the caller may try again
            log.error("function URL %s: could not read its function (%s)", name, exc)
            return _message(503, "ServiceException", "could not read the function; try again")
        if found is None:
            return _message(404, "ResourceNotFoundException", f"no function URL: {name}")
        config = found.url
        headers = {key.lower(): ",".join(request.headers.getall(key)) for key in request.headers}
        if config.cors is not None and is_preflight(request.method, headers):
            return web.Response(status=200, headers=preflight(config.cors, headers))
        limit = self.limits.sync_payload_bytes
        too_large = _message(
            413,
            "RequestEntityTooLargeException",
            f"request body is over {limit:,} bytes, the limit for synchronous invocations",
        )
        if (request.content_length or 0) > limit:  # at once, without waiting for the body
            return too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large
        caller: Caller | web.Response | None = None
        if config.auth == "AWS_IAM" and not self.access.open:
            caller = self._caller(request, name, headers, body)
        if isinstance(caller, web.Response):
            return caller
        answer = await self._invoke(request, name, path, query, body, caller, found)
        if config.cors is not None:
            for key in [k for k in answer.headers if k.lower().startswith("access-control-")]:
                del answer.headers[key]
            for key, value in response_headers(config.cors, headers):
                answer.headers.add(key, value)
        return answer

    async def _config(self, name: str) -> _Registered | None:
        """The registered function's URL configuration and limits (None: it has none)."""
        f = functions.c
        query = select(f.config, f.timeout_s, f.reserved_concurrency).where(f.name == name)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
            await conn.rollback()
        stored: Any = (row.config or {}).get("function_url") if row is not None else None
        if row is None or stored is None:
            return None
        try:
            url = FunctionUrlConfig.model_validate(stored)
        except ValidationError:  # registered by another version of eventwire
            log.warning("function URL %s: its stored function_url is not understood", name)
            return None
        return _Registered(url, float(row.timeout_s), row.reserved_concurrency)

    def _caller(
        self, request: web.Request, name: str, headers: Mapping[str, str], body: bytes
    ) -> Caller | web.Response:
        """Who signed the request, if it is signed by a key that may call ``name``'s URL
        now; else the answer that says why not."""
        arrived = Arrived(
            method=request.method,
            scheme=request.scheme,
            target=request.raw_path,
            headers=headers,
            body=body,
        )
        arn = self.arn(name)
        try:
            key_id = verify(arrived, self.access.secrets, datetime.now(UTC))
            self.access.admit(key_id)
            self.access.authorize(key_id, ACTION, name, arn)
        except SignatureError as exc:
            log.info("function URL %s: refused %s: %s", name, request.method, exc.code)
            return _message(exc.status, exc.code, str(exc))
        except RateExceeded as exc:
            retry = str(max(1, math.ceil(exc.retry_after_s)))
            return _message(429, "TooManyRequestsException", str(exc), {"Retry-After": retry})
        except AccessDenied as exc:
            return _message(403, "AccessDeniedException", str(exc))
        return Caller(key_id, arn.split(":")[4])

    async def _invoke(
        self,
        request: web.Request,
        name: str,
        path: str,
        query: str,
        body: bytes,
        caller: Caller | None,
        function: _Registered,
    ) -> web.Response:
        invocation_id = new_id()
        event = url_event(
            UrlRequest(
                method=request.method,
                path=path,
                query=query,
                headers=list(request.headers.items()),
                body=body,
                source_ip=request.remote or "",
                protocol=f"HTTP/{request.version.major}.{request.version.minor}",
                scheme=request.scheme,
                port=_local_port(request),
            ),
            function=name,
            request_id=invocation_id,
            account_id=self.arn(name).split(":")[4],
            now=datetime.now(UTC),
            caller=caller,
        )
        payload = json.dumps(event).encode()
        try:
            check_payload(payload, sync=True, limits=self.limits)
            reserved = function.reserved_concurrency
            if (
                reserved is not None
                and await self.queue.running(name, datetime.now(UTC)) >= reserved
            ):
                return _message(
                    429,
                    "TooManyRequestsException",
                    f"Rate Exceeded: {name} is running {reserved} invocations, its reserved "
                    "concurrency",
                    {"Retry-After": "1"},
                )
            await enqueue_api_call(
                self.queue,
                name,
                payload,
                sync=True,
                traceparent=incoming_traceparent(request.headers),
                invocation_id=invocation_id,
            )
        except PayloadTooLargeError as exc:
            return _message(413, "RequestEntityTooLargeException", str(exc))
        except Exception as exc:  # the store or queue cannot take it: the caller may try again
            log.error("function URL %s: could not enqueue an invocation (%s)", name, exc)
            return _message(503, "ServiceException", "could not store the invocation; try again")
        ids = {"x-amzn-RequestId": invocation_id, "X-Eventwire-Invocation-Id": invocation_id}
        wait_s = function.timeout_s + WAIT_SLACK_S
        finished = await wait_finished(self.engine, invocation_id, wait_s)
        if finished is None:
            return _message(
                504, "ServiceException", f"invocation {invocation_id} did not finish in time", ids
            )
        if finished.state is not State.SUCCEEDED:
            return _message(502, None, "Internal Server Error", ids)
        try:
            mapped = http_response(finished.result)
        except BadResponse as exc:
            log.info("function URL %s: invocation %s: %s", name, invocation_id, exc)
            return _message(502, None, "Internal Server Error", ids)
        return _response(mapped, ids)


def _local_port(request: web.Request) -> int | None:
    """The port of the listener the request came to."""
    sockname = request.get_extra_info("sockname")
    return int(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def _response(mapped: HttpResponse, ids: Mapping[str, str]) -> web.Response:
    headers = list(mapped.headers)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    headers.extend(ids.items())
    return web.Response(status=mapped.status, body=mapped.body, headers=headers)


def _message(
    status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An answer of a function URL's own: ``{"Message": …}``, the error's type named in
    ``x-amzn-ErrorType``."""
    extra = {**(headers or {}), **({"x-amzn-ErrorType": code} if code else {})}
    return web.json_response({"Message": message}, status=status, headers=extra)
