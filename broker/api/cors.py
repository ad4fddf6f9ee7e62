"""CORS for function URLs, from the function's ``function_url.cors``: the answer to a
browser's preflight, and the headers added to every other answer, as Lambda gives them.

Pure functions of the configuration and the request's headers (names in lower case).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from broker.config.function_urls import Cors

Headers = list[tuple[str, str]]


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """A browser asking before a cross-origin call (answered without invoking)."""
    return (
        method.upper() == "OPTIONS"
        and "origin" in headers
        and "access-control-request-method" in headers
    )


def preflight(cors: Cors, headers: Mapping[str, str]) -> Headers:
    """The headers of the answer to a preflight: none but ``Vary`` when the origin, the
    method or a header asked for is not allowed (the browser then refuses the call)."""
    origin = headers.get("origin", "")
    method = headers.get("access-control-request-method", "").upper()
    requested = headers.get("access-control-request-headers", "").split(",")
    asked = [h.strip().lower() for h in requested if h.strip()]
    allowed_headers = {h.lower() for h in cors.allow_headers}
    if (
        not cors.allows_origin(origin)
        or ("*" not in cors.allow_methods and method not in cors.allow_methods)
        or ("*" not in allowed_headers and not set(asked) <= allowed_headers)
    ):
        return [("Vary", "Origin")]
    answer = [("Access-Control-Allow-Origin", _allowed_origin(cors, origin))]
    if cors.allow_credentials:
        answer.append(("Access-Control-Allow-Credentials", "true"))
    methods = method if "*" in cors.allow_methods and cors.allow_credentials else None
    answer.append(("Access-Control-Allow-Methods", methods or ", ".join(cors.allow_methods)))
    if asked:
        shown = ", ".join(asked) if "*" in allowed_headers else ", ".join(cors.allow_headers)
        answer.append(("Access-Control-Allow-Headers", shown))
    if cors.max_age_s:
        answer.append(("Access-Control-Max-Age", str(math.floor(cors.max_age_s))))
    answer.append(("Vary", "Origin"))
    return answer


def response_headers(cors: Cors, headers: Mapping[str, str]) -> Headers:
    """The CORS headers of an answer to a request from ``Origin`` (none when not allowed)."""
    origin = headers.get("origin")
    if origin is None or not cors.allows_origin(origin):
        return [("Vary", "Origin")]
    answer = [("Access-Control-Allow-Origin", _allowed_origin(cors, origin))]
    if cors.allow_credentials:
        answer.append(("Access-Control-Allow-Credentials", "true"))
    if cors.expose_headers:
        answer.append(("Access-Control-Expose-Headers", ", ".join(cors.expose_headers)))
    answer.append(("Vary", "Origin"))
    return answer


def _allowed_origin(cors: Cors, origin: str) -> str:
    """``*`` for any origin; the caller's own origin when listed, or when credentials are
    allowed (browsers refuse ``*`` with credentials)."""
    if "*" in cors.allow_origins and not cors.allow_credentials:
        return "*"
    return origin
