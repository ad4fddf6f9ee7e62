"""A function's ``function_url``: plain HTTP requests to ``/fn/NAME/...`` invoke it.

::

    functions:
      orders-api:
        handler: app.orders:handler
        function_url:
          auth: NONE                  # public, as a Lambda function URL with AuthType NONE
          cors:
            allow_origins: [https://shop.example.com]
            allow_methods: [GET, POST]
            allow_headers: [content-type]
            expose_headers: [x-request-id]
            max_age: 300              # seconds a browser may keep the preflight's answer
            allow_credentials: true

The fields are Lambda's ``FunctionUrlConfig`` and ``Cors``, in snake case. (``url`` is
the http invoker's endpoint, hence ``function_url``.)
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from broker.config.durations import parse_duration

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

_ORIGIN = re.compile(r"^(\*|https?://[^/\s?#]{1,253})$")
_HEADER = re.compile(r"^(\*|[!#$%&'*+.^_`|~0-9A-Za-z-]{1,1024})$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Cors(_Section):
    """Which browsers' cross-origin calls are let in: preflights are answered from here."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: Annotated[float, BeforeValidator(parse_duration)] = Field(
        0.0, alias="max_age", ge=0, le=86400
    )
    allow_credentials: bool = False

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"expected origins like https://example.com or http://localhost:3000 "
                    f"(scheme and host, no path) or '*', got {origin!r}"
                )
        return value

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for method in value:
            if method != "*" and method.upper() not in METHODS:
                raise ValueError(f"expected '*' or methods of {', '.join(METHODS)}, got {method!r}")
        return tuple(method.upper() for method in value)

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for header in value:
            if not _HEADER.match(header):
                raise ValueError(f"expected header names (or '*'), got {header!r}")
        return value

    def allows_origin(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin in self.allow_origins


class FunctionUrlConfig(_Section):
    """``auth``: ``AWS_IAM`` (requests signed by an ``api.keys`` key allowed
    ``lambda:InvokeFunctionUrl``) or ``NONE`` (anyone who reaches the API listener)."""

    auth: Literal["NONE", "AWS_IAM"]
    cors: Cors | None = None
