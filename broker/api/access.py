"""Who may call the API: the configured keys with their secrets, what each may do, and
whether an open API may listen where it is asked to."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from broker.config.api import AccessKey, ApiConfig
from broker.errors import UsageError
from broker.http.listen import split_listen

log = logging.getLogger("eventwire.api")


class AccessDenied(Exception):
    """The key may not take the action: Lambda's 403 ``AccessDeniedException``."""


class RateExceeded(Exception):
    """The key sent more than its ``rate_limit``: Lambda's 429 ``TooManyRequestsException``,
    to be tried again after ``retry_after_s``."""

    def __init__(self, key_id: str, retry_after_s: float) -> None:
        super().__init__(f"Rate exceeded for key {key_id}")
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    at: float

    def take(self, now: float) -> float:
        """Take a token; 0 when there was one, else the seconds until there is."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Access:
    """The keys the API accepts, by id, with their secrets; none: the API is open."""

    keys: Mapping[str, AccessKey]
    secrets: Mapping[str, bytes]
    _buckets: dict[str, _Bucket] = field(default_factory=dict, init=False, repr=False)
    """Each rate-limited key's token bucket, made at its first request."""

    @property
    def open(self) -> bool:
        return not self.keys

    def admit(self, key_id: str, now: float | None = None) -> None:
        """Count one request of ``key_id`` against its ``rate_limit`` (this process's
        count); :class:`RateExceeded` when it has none left."""
        key = self.keys.get(key_id)
        if key is None or key.rate_limit is None:
            return
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key_id)
        if bucket is None:
            limit = key.rate_limit
            capacity = float(limit.capacity)
            bucket = self._buckets[key_id] = _Bucket(limit.per_second, capacity, capacity, now)
        wait_s = bucket.take(now)
        if wait_s:
            raise RateExceeded(key_id, wait_s)

    def authorize(self, key_id: str | None, action: str, function: str | None, arn: str) -> None:
        """Raise :class:`AccessDenied` unless key ``key_id`` may take ``action`` on
        ``function`` (``arn`` names it in the message); an open API allows everything."""
        if self.open:
            return
        key = self.keys.get(key_id or "")
        if key is None or not key.allows(action, function):
            raise AccessDenied(
                f"User: {key_id} is not authorized to perform: {action} on resource: {arn} "
                f"because no statement of key {key_id} allows the {action} action"
            )


def load_access(api: ApiConfig, environ: Mapping[str, str]) -> Access:
    """The keys of ``api`` with their secrets read (from the environment or files); a
    :class:`UsageError` names the key whose secret cannot be had."""
    secrets = {}
    for key in api.keys:
        secrets[key.id] = _secret(key, environ)
    return Access({key.id: key for key in api.keys}, secrets)


def _secret(key: AccessKey, environ: Mapping[str, str]) -> bytes:
    if key.secret_env is not None:
        value = environ.get(key.secret_env, "")
        if not value:
            raise UsageError(
                f"api key {key.id}: {key.secret_env} (its secret_env) is not set or empty"
            )
        return value.encode()
    assert key.secret_file is not None
    try:
        value = key.secret_file.read_text().strip()
    except OSError as exc:
        raise UsageError(
            f"api key {key.id}: cannot read its secret_file {key.secret_file}: "
            f"{exc.strerror or exc}"
        ) from None
    if not value:
        raise UsageError(f"api key {key.id}: its secret_file {key.secret_file} is empty")
    return value.encode()


def is_loopback(listen: str) -> bool:
    """Whether ``host:port`` is reachable only from this machine."""
    host, _ = split_listen(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # all interfaces (""), or a name: reachable from elsewhere
        return False


def check_exposure(
    listen: str, access: Access, allow_unauthenticated: bool, *, public: Sequence[str] = ()
) -> None:
    """Refuse an open API on an address others can reach, unless explicitly allowed.

    The function URLs in ``public`` (``auth: NONE``) are public by their configuration,
    as in Lambda: they do not make an API with keys refused, and are named in the log
    when others can reach them."""
    reachable = not is_loopback(listen)
    if access.open and not allow_unauthenticated and reachable:
        raise UsageError(
            f"the Lambda API would listen on {listen} with no api.keys: anyone who can "
            "reach it could invoke every function. Declare api.keys in eventwire.yaml "
            "(README: Security), listen on 127.0.0.1, or pass --allow-unauthenticated"
        )
    if public and reachable:
        log.warning("function URLs with auth NONE are public on %s: %s", listen, ", ".join(public))
