"""``https://host/path`` (or ``http://``) — POST the message as JSON to a webhook.

A 2xx answer is a delivery. Anything else fails it: it is retried with the
destination's backoff, and no sooner than a 429's or 5xx's ``Retry-After``
says; a connection that fails or no answer within the destination's
``timeout`` likewise. Each request carries ``X-Eventwire-Delivery-Id`` (the
same on every retry of one delivery, for receivers that deduplicate) and the
message's headers (a dead letter's ``RequestID``, ``ErrorCode``,
``ErrorMessage``; values that are not printable ASCII are percent-encoded).

With ``signing_secret_env: NAME`` (in ``destinations:``) each request is
signed with the secret in that environment variable::

    X-Eventwire-Signature: t=1700000000,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

and the receiver checks it with :func:`verify_signature` (or the same few
lines in any language), rejecting old timestamps against replays.
aiohttp is imported only when the first message is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    require_module,
)
from broker.http.headers import expand_headers, retry_after_s

if TYPE_CHECKING:
    from broker.config.models import DestinationConfig

SIGNATURE_HEADER = "X-Eventwire-Signature"
DELIVERY_ID_HEADER = "X-Eventwire-Delivery-Id"
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def parse(uri: str) -> ExternalDestination:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise ValueError(f"destination {uri!r} has no host; expected https://host/path")
    require_module("aiohttp", "http", "webhook")
    return ExternalDestination(uri, "http", {"url": uri.split("#", 1)[0]})


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: bytes, body: bytes, header: str, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).rsplit("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def header_value(value: str) -> str:
    """``value`` as an HTTP header may carry it: printable ASCII, the rest percent-encoded."""
    return quote(value, safe=_HEADER_SAFE)


class WebhookSender:
    """One HTTP connection pool per destination, opened on first use."""

    def __init__(
        self,
        destination: ExternalDestination,
        settings: DestinationConfig,
        environ: Mapping[str, str],
    ) -> None:
        self.url: str = destination.options["url"]
        self.headers = expand_headers(settings.headers, environ)
        self.secret: bytes | None = None
        if settings.signing_secret_env is not None:
            name = settings.signing_secret_env
            if not environ.get(name):
                raise KeyError(f"signing_secret_env: environment variable {name} is not set")
            self.secret = environ[name].encode()
        self.tls_verify = settings.tls_verify
        self._session: Any = None

    def _ready(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ssl=self.tls_verify)
            )
        return self._session

    async def send(self, message: Message) -> str:
        import aiohttp

        headers = {
            **self.headers,
            **{name: header_value(value) for name, value in message.headers.items()},
            "Content-Type": "application/json",
            "User-Agent": "eventwire",
        }
        if message.id:
            headers[DELIVERY_ID_HEADER] = message.id
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, message.body, int(time.time()))
        try:
            async with self._ready().post(
                self.url, data=message.body, headers=headers, allow_redirects=False
            ) as response:
                text = (await response.content.read(500)).decode(errors="replace").strip()
                status = response.status
                wait_s = retry_after_s(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryFailed(
                "Destination.ConnectionError", f"POST: {str(exc) or type(exc).__name__}"
            ) from None
        if 200 <= status < 300:
            return f"HTTP {status}"
        retry_after = wait_s if status == 429 or status >= 500 else None
        raise DeliveryFailed(
            f"Destination.Http{status}",
            f"HTTP {status}" + (f": {text}" if text else ""),
            retry_after_s=retry_after,
        )

    async def reset(self) -> None:
        """Connections are pooled and replaced by aiohttp; nothing to drop."""

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def sender(
    destination: ExternalDestination, settings: DestinationConfig, environ: Mapping[str, str]
) -> WebhookSender:
    return WebhookSender(destination, settings, environ)
