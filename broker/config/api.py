"""The ``api`` section of ``eventwire.yaml``: who may call the Lambda API, and over TLS.

::

    api:
      keys:
        - id: AKIAORDERSWRITER          # the access key id SDKs sign with
          secret_env: ORDERS_SECRET     # its secret: from this variable ...
          allow:
            - actions: [lambda:InvokeFunction, lambda:GetFunction]
              functions: [orders-*]
        - id: AKIAREADONLY
          secret_file: /run/secrets/read  # ... or from this file, never in the YAML
          allow:
            - actions: ["lambda:Get*", lambda:ListFunctions]
          rate_limit: {per_second: 20, burst: 50}  # requests of this key, per process
      tls: {cert: /etc/eventwire/api.pem, key: /etc/eventwire/api.key}

A request is signed with Signature Version 4 by one of ``keys``; what it may do is what
its key's ``allow`` statements grant (deny by default). With no keys the API is open,
which ``serve`` allows only on a loopback address unless told
``--allow-unauthenticated``.
"""

from __future__ import annotations

import fnmatch
import math
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.config.variables import VariableName

ACTIONS = (
    "lambda:InvokeFunction",
    "lambda:InvokeFunctionUrl",
    "lambda:GetFunction",
    "lambda:ListFunctions",
    "eventwire:RedriveDeadLetters",
    "eventwire:PurgeDeadLetters",
    "eventwire:PauseSchedule",
    "eventwire:DisableMapping",
)
"""What a statement may allow: Lambda's actions, and the admin actions the console and the
command line take over HTTP."""

_KEY_ID = re.compile(r"^[A-Za-z0-9]{4,128}$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?:$-]{1,140}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Statement(_Section):
    """Allows ``actions`` (wildcards: ``lambda:*``, ``lambda:Get*``) on ``functions``
    (names or patterns: ``orders-*``; all when left out)."""

    actions: tuple[str, ...] = Field(min_length=1)
    functions: tuple[str, ...] = ("*",)

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for action in value:
            if not any(fnmatch.fnmatchcase(known, action) for known in ACTIONS):
                raise ValueError(
                    f"{action!r} names no action; expected one of {', '.join(ACTIONS)} "
                    "(or a pattern such as lambda:*)"
                )
        return value

    @field_validator("functions")
    @classmethod
    def _functions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not _PATTERN.match(pattern):
                raise ValueError(
                    f"{pattern!r} is not a function name or pattern (letters, digits, "
                    "'-', '_', '.', ':', and the wildcards '*' and '?')"
                )
        return value

    def allows(self, action: str, function: str | None) -> bool:
        """Whether this statement allows ``action`` on ``function`` (None: no function,
        as ``ListFunctions``)."""
        if not any(fnmatch.fnmatchcase(action, pattern) for pattern in self.actions):
            return False
        return function is None or any(fnmatch.fnmatchcase(function, p) for p in self.functions)


class RateLimit(_Section):
    """A token bucket: ``per_second`` requests on average, ``burst`` at once (default: one
    second's worth)."""

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=10_000_000)

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, math.ceil(self.per_second))


class AccessKey(_Section):
    """An access key: its id, where its secret is, what it may do, and how often."""

    id: str
    secret_env: VariableName | None = None
    secret_file: Path | None = None
    allow: tuple[Statement, ...] = ()
    rate_limit: RateLimit | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _KEY_ID.match(value):
            raise ValueError(f"expected 4-128 letters and digits (an access key id), got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> AccessKey:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError(
                f"key {self.id}: give its secret as `secret_env: VARIABLE` or "
                "`secret_file: PATH` (one of them; never the secret itself)"
            )
        return self

    def allows(self, action: str, function: str | None) -> bool:
        return any(statement.allows(action, function) for statement in self.allow)


class TlsConfig(_Section):
    """A certificate chain and its private key, PEM files."""

    cert: Path
    key: Path


class ApiConfig(_Section):
    keys: tuple[AccessKey, ...] = ()
    tls: TlsConfig | None = None

    @field_validator("keys")
    @classmethod
    def _unique(cls, value: tuple[AccessKey, ...]) -> tuple[AccessKey, ...]:
        seen: set[str] = set()
        for key in value:
            if key.id in seen:
                raise ValueError(f"key {key.id} is declared twice")
            seen.add(key.id)
        return value
