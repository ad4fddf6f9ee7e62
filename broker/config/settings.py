"""Connection and process settings, read once from ``EVENTWIRE_*`` variables and flags.

Nothing else in Eventwire reads the environment: a ``Settings`` is built at
the edge (the CLI) and handed to what needs it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.config.durations import parse_duration
from broker.config.roles import ALL_ROLES, parse_roles
from broker.errors import UsageError

Seconds = Annotated[float, BeforeValidator(parse_duration)]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


LogLevel = Annotated[str, AfterValidator(_log_level)]


def _duration_or_forever(value: object) -> object:
    if not isinstance(value, str):
        return value
    if value.strip().lower() == "forever":
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"expected a duration like 7d or 12h, or forever, got {value!r}") from None


Retention = Annotated[float | None, BeforeValidator(_duration_or_forever)]
Roles = Annotated[str, AfterValidator(parse_roles)]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///eventwire.db"


def _env(name: str) -> AliasChoices:
    """A duration setting is ``EVENTWIRE_LEASE_GRACE`` outside and ``lease_grace_s`` inside."""
    return AliasChoices(name, f"EVENTWIRE_{name.upper()}")


_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}")


def _listen(value: str) -> str:
    if not _LISTEN.fullmatch(value):
        raise ValueError("expected host:port (an IPv6 host in brackets; port 0: any free one)")
    return value


Listen = Annotated[str, AfterValidator(_listen)]


class Settings(BaseSettings):
    """Where the store is and how this process behaves.

    Every field can be set as ``EVENTWIRE_<NAME>`` (``EVENTWIRE_DATABASE_URL``,
    ``EVENTWIRE_CONCURRENCY`` ...) or by the matching CLI flag.
    """

    model_config = SettingsConfigDict(
        env_prefix="EVENTWIRE_", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    queue_url: str | None = None
    queue_prefix: str = Field("eventwire", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    idempotency_window_s: Seconds = Field(
        24 * 3600.0, validation_alias=_env("idempotency_window"), gt=0
    )
    account_concurrency: int | None = Field(None, ge=1)
    config: str = "eventwire.yaml"
    concurrency: int = Field(64, ge=1, le=100_000)
    lease_grace_s: Seconds = Field(30.0, validation_alias=_env("lease_grace"), ge=0)
    shutdown_grace_s: Seconds = Field(30.0, validation_alias=_env("shutdown_grace"), ge=0)
    poll_interval_s: Seconds = Field(1.0, validation_alias=_env("poll_interval"), gt=0)
    settle_batch: int = Field(256, ge=1)
    # False: a succeeded invocation's history row keeps an empty payload (failed and dead
    # ones, and dead letters, keep theirs), for high-volume mappings whose source has it.
    keep_succeeded_payloads: bool = True
    # How long finished invocations stay in the history (None: forever).
    history_retention_s: Retention = Field(
        7 * 24 * 3600.0, validation_alias=_env("history_retention"), gt=0
    )
    scheduler_lease_s: Seconds = Field(30.0, validation_alias=_env("scheduler_lease"), gt=0)
    region: str = "local"
    account_id: str = "000000000000"
    log_level: LogLevel = "INFO"
    log_format: Literal["text", "json"] = "text"
    # What `serve` runs: a comma-separated list of broker.config.roles.ROLES.
    roles: Roles = ALL_ROLES
    # Where `serve` listens for object notification webhooks (only when one is configured).
    http_listen: Listen = "127.0.0.1:8080"
    # Where `serve` takes Lambda Invoke API calls (broker.api.lambda_api); off unless set.
    api_listen: Listen | None = None
    # Where `serve` answers GET /metrics (Prometheus) besides the API listener; off unless set.
    metrics_listen: Listen | None = None
    # Let the API listen beyond loopback with no api.keys (anyone reaching it may call it).
    allow_unauthenticated: bool = False

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(self.roles.split(","))

    @property
    def effective_queue_url(self) -> str:
        return self.queue_url or self.database_url

    def function_arn(self, function: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{function}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with ``overrides`` (flags) on top; None means unset."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "?"
        message = error["msg"].removeprefix("Value error, ")
        if "got" not in message:
            message = f"{message}, got {error.get('input')!r}"
        where = f"EVENTWIRE_{name.upper()}"
        if name in overrides:  # the command has a flag for it
            where += f" or --{name.replace('_', '-')}"
        raise UsageError(f"setting {name} ({where}): {message}") from None
