"""The http invoker: POSTs the event as JSON to a URL (a webhook, a Lambda container's emulator).

What the answer means, as Eventwire's one error taxonomy has it:

* a 2xx is success; its body is the response (JSON as it is, anything else
  as a JSON string) — unless it carries ``X-Amz-Function-Error`` or is a
  Lambda error document (``errorType`` and ``errorMessage``), which is a
  function error, as a Lambda container's runtime interface emulator answers;
* 429 and 503 are throttles: retried with the system backoff, no sooner than
  ``Retry-After`` says, within the maximum event age, without using up attempts;
* other 5xx, and a connection that fails, are system errors (retried likewise);
* other statuses are function errors ``Http.<status>`` (retried by the policy);
* no answer by the function's timeout is ``Task.TimedOut``; a body larger than
  the response limit is ``Function.ResponseSizeTooLarge``.

Connections are pooled per function (``concurrency`` of them, 100 by
default); TLS certificates are verified unless ``tls_verify: false``.
``headers`` may name environment variables as ``${NAME}``, read when the
service starts: a secret stays out of the configuration and the store.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Final

from broker.errors import ConfigError
from broker.functions.invoker import InvokeRequest, InvokerInitError
from broker.http.headers import expand_headers, retry_after_s
from broker.models import FunctionError, Outcome, Success, SystemFault
from broker.observability.tracing import TRACEPARENT, xray_header
from invokers.context import seconds_until

try:
    import aiohttp
except ImportError:  # pragma: no cover - depends on the installation
    raise ConfigError("the http invoker needs aiohttp: pip install 'eventwire[http]'") from None

if TYPE_CHECKING:
    from broker.config.models import FunctionConfig

RESPONSE_LIMIT_BYTES: Final = 64 * 1024 * 1024
"""What is read of a response at most (the limit users set is checked by the dispatcher:
``limits.response``, 6 MB by default)."""
DEFAULT_CONNECTIONS: Final = 100
THROTTLED: Final = "Throttled"
_CLOSED: Final = SystemFault("Invoker.Closed", "the http invoker has been closed")


class HttpInvoker:
    """POSTs each invocation to one URL; see the module docstring."""

    def __init__(
        self, name: str, config: FunctionConfig, *, response_limit: int = RESPONSE_LIMIT_BYTES
    ) -> None:
        self.name = name
        self.url = config.url or ""
        self._raw_headers = dict(config.headers)
        self._headers: dict[str, str] | None = None
        self._header_error: str | None = None
        self._timeout_s = config.timeout_s
        self._connections = config.concurrency or DEFAULT_CONNECTIONS
        self._tls_verify = config.tls_verify
        self._response_limit = response_limit
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def start(self) -> None:
        try:
            self._headers = expand_headers(self._raw_headers, os.environ)
        except KeyError as exc:
            self._header_error = str(exc.args[0])
            raise InvokerInitError(self._header_error) from None
        connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._tls_verify)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"Content-Type": "application/json"}
        )

    async def invoke(self, request: InvokeRequest) -> Outcome:
        if self._closed:
            return _CLOSED
        if self._session is None or self._headers is None:
            return SystemFault(
                "Invoker.ConfigError", self._header_error or "the http invoker was not started"
            )
        remaining_s = seconds_until(request.deadline)
        if remaining_s <= 0:
            return self._timed_out()
        headers = {
            **self._headers,
            "X-Eventwire-Request-Id": request.request_id,
            "X-Eventwire-Attempt": str(request.attempt),
        }
        if request.traceparent is not None:  # traced: the endpoint continues the trace
            headers[TRACEPARENT] = request.traceparent
            headers["X-Amzn-Trace-Id"] = xray_header(request.traceparent) or ""
        try:
            async with asyncio.timeout(remaining_s):
                async with self._session.post(
                    self.url, data=request.payload, headers=headers, allow_redirects=False
                ) as response:
                    body = await response.content.read(self._response_limit + 1)
                    return self._outcome(response, body)
        except TimeoutError:
            return self._timed_out()
        except aiohttp.ClientError as exc:
            return SystemFault("Http.ConnectionError", f"POST {self.url}: {_describe(exc)}")

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    def _timed_out(self) -> FunctionError:
        return FunctionError("Task.TimedOut", f"Task timed out after {self._timeout_s:.2f} seconds")

    def _outcome(self, response: aiohttp.ClientResponse, body: bytes) -> Outcome:
        status = response.status
        if status in (429, 503):
            return SystemFault(
                THROTTLED,
                f"HTTP {status} from {self.url}",
                retry_after_s=retry_after_s(response.headers.get("Retry-After")),
            )
        if status >= 500:
            return SystemFault("Http.ServerError", f"HTTP {status} from {self.url}: {_cut(body)}")
        if not 200 <= status < 300:
            return FunctionError(f"Http.{status}", f"HTTP {status} from {self.url}: {_cut(body)}")
        if len(body) > self._response_limit:
            return FunctionError(
                "Function.ResponseSizeTooLarge",
                "Response payload size exceeded maximum allowed payload size "
                f"({self._response_limit} bytes).",
            )
        document = _json(body)
        function_error = response.headers.get("X-Amz-Function-Error")
        if function_error is not None or _is_error_document(document):
            return _function_error(document, function_error, body)
        if document is _NOT_JSON:
            return Success(json.dumps(body.decode(errors="replace")).encode())
        return Success(body if body.strip() else b"null")


_NOT_JSON: Final = object()


def _json(body: bytes) -> object:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _is_error_document(document: object) -> bool:
    return isinstance(document, dict) and "errorType" in document and "errorMessage" in document


def _function_error(document: object, header: str | None, body: bytes) -> FunctionError:
    if not isinstance(document, dict):
        return FunctionError(header or "Unhandled", _cut(body))
    trace = document.get("stackTrace") or ()
    return FunctionError(
        str(document.get("errorType") or header or "Unhandled"),
        str(document.get("errorMessage") or ""),
        tuple(str(line) for line in trace) if isinstance(trace, list) else (),
    )


def _cut(body: bytes, limit: int = 500) -> str:
    text = body.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
