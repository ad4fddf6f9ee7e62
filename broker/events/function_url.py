"""Lambda's function URL event (payload format 2.0), and the HTTP response a handler's
result maps back to, as Lambda maps them.

Pure functions: :func:`url_event` shapes a request as it arrived; :func:`http_response`
reads what the function returned:

* a JSON object with ``statusCode``: that status, its ``headers`` (but those of the
  connection, :data:`FRAMING`), each of its ``cookies`` as a ``Set-Cookie`` header, and
  its ``body`` (base64-decoded when ``isBase64Encoded``);
* any other JSON value (a string, a list, an object without ``statusCode``): 200, with
  the JSON as it came as the body and ``content-type: application/json``;
* a ``statusCode`` that is not a final HTTP status (200-599), headers that are not
  strings … : a :class:`BadResponse`, which Lambda answers 502.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

VERSION = "2.0"
ROUTE_KEY = "$default"

TEXT_TYPES = ("application/json", "application/javascript", "application/xml")
"""Besides ``text/*`` and ``+json``/``+xml`` types, the content types whose body the event
carries as text; any other body (none named, ``application/octet-stream``, images, forms)
comes base64-encoded with ``isBase64Encoded: true``, as Lambda sends it."""

FRAMING = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)
"""Headers of the connection, not of the response: the server sets them, not the function."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class UrlRequest:
    """An HTTP request to a function URL, as it arrived."""

    method: str
    path: str
    """The path below the function's URL, as sent (``/`` at least)."""
    query: str
    """The query string as sent, without ``?``."""
    headers: Sequence[tuple[str, str]]
    """In the order they came, repeated names repeated."""
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"
    scheme: str = "http"
    port: int | None = None
    """The port the request came to (``x-forwarded-port``), if known."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who signed an ``AWS_IAM`` request: ``requestContext.authorizer.iam``."""

    access_key: str
    account_id: str

    def iam(self) -> dict[str, Any]:
        return {
            "accessKey": self.access_key,
            "accountId": self.account_id,
            "callerId": self.access_key,
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": f"arn:aws:iam::{self.account_id}:user/{self.access_key}",
            "userId": self.access_key,
        }


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class BadResponse(Exception):
    """The function's result cannot be an HTTP response: Lambda answers 502."""


def url_id(function: str) -> str:
    """A function URL's id (``apiId``, the domain prefix Lambda would give it): 32 lower
    case letters and digits, the same for the same function."""
    return hashlib.sha256(function.encode()).hexdigest()[:32]


def url_event(
    request: UrlRequest,
    *,
    function: str,
    request_id: str,
    account_id: str,
    now: datetime,
    caller: Caller | None = None,
) -> dict[str, Any]:
    """The event Lambda gives a function for ``request``; ``account_id`` is the function
    owner's, ``"anonymous"`` when the URL's auth is ``NONE``; ``now`` is aware."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        elif key in headers:
            headers[key] = f"{headers[key]},{value}"
        else:
            headers[key] = value
    _forwarded(headers, request)
    domain = headers.get("host", "")
    epoch_ms = int(now.timestamp() * 1000)
    http = {
        "method": request.method.upper(),
        "path": request.path,
        "protocol": request.protocol,
        "sourceIp": request.source_ip,
        "userAgent": headers.get("user-agent", ""),
    }
    context: dict[str, Any] = {
        "accountId": account_id if caller is not None else "anonymous",
        "apiId": url_id(function),
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0].split(":", 1)[0],
        "http": http,
        "requestId": request_id,
        "routeKey": ROUTE_KEY,
        "stage": ROUTE_KEY,
        "time": _clf_time(now),
        "timeEpoch": epoch_ms,
    }
    if caller is not None:
        context["authorizer"] = {"iam": caller.iam()}
    event: dict[str, Any] = {
        "version": VERSION,
        "routeKey": ROUTE_KEY,
        "rawPath": request.path,
        "rawQueryString": request.query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    parameters = query_parameters(request.query)
    if parameters:
        event["queryStringParameters"] = parameters
    event["requestContext"] = context
    if request.body:
        as_text = _text(request.body, headers.get("content-type"))
        event["body"] = as_text if as_text is not None else base64.b64encode(request.body).decode()
        event["isBase64Encoded"] = as_text is None
    else:
        event["isBase64Encoded"] = False
    return event


def _forwarded(headers: dict[str, str], request: UrlRequest) -> None:
    """The ``x-forwarded-*`` headers Lambda's front end adds: the caller's address after
    any the request came with, and the scheme and port it came to."""
    before = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{before}, {request.source_ip}" if before else request.source_ip
    headers["x-forwarded-proto"] = request.scheme
    if request.port is not None:
        headers["x-forwarded-port"] = str(request.port)


def query_parameters(query: str) -> dict[str, str]:
    """``queryStringParameters``: decoded, a repeated key's values joined with commas."""
    parameters: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        parameters[key] = f"{parameters[key]},{value}" if key in parameters else value
    return parameters


def is_text(content_type: str | None) -> bool:
    """Whether Lambda passes a body of ``content_type`` as text (else base64)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return (
        media.startswith("text/")
        or media in TEXT_TYPES
        or media.endswith("+json")
        or media.endswith("+xml")
    )


def _text(body: bytes, content_type: str | None) -> str | None:
    if not is_text(content_type):
        return None
    try:
        return body.decode()
    except UnicodeDecodeError:  # text by its type, not by its bytes: base64 keeps them
        return None


def _clf_time(now: datetime) -> str:
    """``12/Mar/2020:19:03:58 +0000``, as ``requestContext.time`` is written."""
    return f"{now:%d}/{_MONTHS[now.month - 1]}/{now:%Y:%H:%M:%S %z}"


def http_response(result: bytes | None) -> HttpResponse:
    """The HTTP response for what the function returned (its JSON result)."""
    raw = result if result is not None else b"null"
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadResponse("the function's result is not JSON") from None
    if not isinstance(value, dict) or "statusCode" not in value:
        return HttpResponse(200, [("content-type", "application/json")], raw)
    return _structured(value)


def _structured(value: Mapping[str, Any]) -> HttpResponse:
    status = value["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise BadResponse(f"statusCode {status!r} is not the status of a final HTTP response")
    headers: list[tuple[str, str]] = []
    given = value.get("headers") or {}
    if not isinstance(given, dict):
        raise BadResponse("headers must be an object of names and values")
    for name, header in given.items():
        if not isinstance(header, str | int | float) or isinstance(header, bool):
            raise BadResponse(f"header {name!r} must be a string")
        if str(name).lower() not in FRAMING:
            headers.append((str(name), str(header)))
    cookies = value.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise BadResponse("cookies must be a list of strings")
    headers.extend(("set-cookie", cookie) for cookie in cookies)
    return HttpResponse(status, headers, _body(value.get("body"), value.get("isBase64Encoded")))


def _body(body: Any, encoded: Any) -> bytes:
    if body is None:
        return b""
    if not isinstance(body, str):
        return json.dumps(body).encode()
    if encoded is True:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadResponse("isBase64Encoded is true but the body is not base64") from None
    return body.encode()
