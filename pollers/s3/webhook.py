"""Object notification webhooks: MinIO and Ceph RGW POST S3 event documents to ``serve``.

``POST /notifications/<name>`` with the token of notification ``name`` (in
``Authorization: Bearer <token>`` as MinIO sends its ``auth_token``, as the
password of HTTP basic auth, or as ``?token=`` for a sender that cannot set
headers) and an S3 event document. Each record that passes the
notification's filter becomes one invocation; the answer is 200 only once
they are all durably enqueued (one transaction), so a sender that got no 200
sends again, and the idempotency key (function, bucket, key, event,
sequencer) makes the second delivery the same invocation, also when the
same notification comes through a mapping (:mod:`pollers.s3.invocations`).
A wrong token is 401 and a document that is not an S3 event document 400
with the reason; nothing is enqueued.

One HTTP server serves every webhook notification, on
``EVENTWIRE_HTTP_LISTEN`` (default ``127.0.0.1:8080``; port 0 picks a free
one, logged as ``object notifications: listening on http://…``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from broker.config.notifications import ObjectNotificationConfig
from broker.errors import ConfigError, UsageError
from broker.events.s3 import LOCAL_ADDRESS, S3DocumentError
from broker.http.listen import AppServer
from broker.observability.tracing import incoming_traceparent, with_parent
from broker.queue.base import InvocationQueue
from broker.sources.pollers import PollerContext
from pollers.s3.invocations import notified

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "object notification webhooks need aiohttp: pip install 'eventwire[notifications]'"
    ) from None

log = logging.getLogger("eventwire.notifications")

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    notification: ObjectNotificationConfig
    tokens: tuple[bytes, ...]


class WebhookServer(AppServer):
    """The HTTP endpoint of every ``source: webhook`` object notification."""

    name = "object-notifications-webhook"

    def __init__(
        self,
        queue: InvocationQueue,
        targets: Mapping[str, Target],
        listen: str,
        region: str,
    ) -> None:
        super().__init__(listen)
        self.queue = queue
        self.targets = dict(targets)
        self.region = region

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_DOCUMENT_BYTES)
        app.router.add_post("/notifications/{name}", self._post)
        app.router.add_get("/notifications/{name}", self._probe)  # MinIO probes with HEAD
        await self.serve(app, "EVENTWIRE_HTTP_LISTEN")
        log.info(
            "object notifications: listening on %s/notifications/{%s}",
            self.url,
            ",".join(sorted(self.targets)),
        )

    async def _probe(self, request: web.Request) -> web.Response:
        known = request.match_info["name"] in self.targets
        return web.Response(status=200 if known else 404)

    async def _post(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        target = self.targets.get(name)
        if target is None:
            return _error(404, f"no webhook object notification named {name!r}")
        if not authorized(request, target.tokens):
            log.warning("object notifications: %s: rejected a request with a wrong token", name)
            return _error(401, "missing or wrong token", {"WWW-Authenticate": "Bearer"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"document larger than {MAX_DOCUMENT_BYTES} bytes")
        config = target.notification
        try:
            document = notified(
                body,
                function=config.function,
                s3_filter=config.filter,
                region=self.region,
                source=with_parent(
                    {"notification": config.name}, incoming_traceparent(request.headers)
                ),
                sender=request.remote or LOCAL_ADDRESS,
            )
        except S3DocumentError as exc:
            return _error(400, f"not an S3 event notification document: {exc}")
        batch = document.invocations
        try:
            answers = await self.queue.enqueue(batch) if batch else []
        except Exception as exc:
            log.error("object notifications: %s: could not enqueue (%s)", name, exc)
            return _error(503, "could not store the invocations; send again")
        created = sum(1 for answer in answers if answer.created)
        if batch:
            log.info(
                "object notifications: %s: %d records, %d invoke %s (%d duplicates)",
                name,
                document.records,
                len(batch),
                config.function,
                len(batch) - created,
            )
        return web.json_response(
            {
                "records": document.records,
                "matched": len(batch),
                "enqueued": created,
                "duplicates": len(batch) - created,
                "invocations": [answer.id for answer in answers],
            }
        )


def authorized(request: web.Request, tokens: tuple[bytes, ...]) -> bool:
    """Whether the request carries one of ``tokens``; compared in constant time, with
    every token whatever matched."""
    offered: list[str] = []
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        offered.append(decoded.partition(":")[2])
    elif header:
        offered.append(header.strip())
    if "token" in request.query:
        offered.append(request.query["token"])
    ok = False
    for candidate in offered:
        for token in tokens:
            ok |= hmac.compare_digest(candidate.encode(), token)
    return ok


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def create(context: PollerContext, environ: Mapping[str, str] = os.environ) -> WebhookServer:
    """The server for the configuration's webhook notifications; tokens from ``environ``."""
    targets: dict[str, Target] = {}
    for notification in context.config.object_notifications:
        if not notification.is_webhook:
            continue
        assert notification.token_env is not None
        tokens = []
        for variable in notification.token_env:
            token = environ.get(variable, "")
            if not token:
                raise UsageError(
                    f"object notification {notification.name}: environment variable "
                    f"{variable} (its token_env) is not set or empty"
                )
            tokens.append(token.encode())
        targets[notification.name] = Target(notification, tuple(tokens))
    return WebhookServer(
        context.queue, targets, context.settings.http_listen, context.settings.region
    )
