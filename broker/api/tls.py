"""Serving HTTPS: a server's TLS context from the certificate and key a config names."""

from __future__ import annotations

import ssl

from broker.config.api import TlsConfig
from broker.errors import UsageError


def server_context(tls: TlsConfig, setting: str) -> ssl.SSLContext:
    """A server's TLS context (TLS 1.2 and later) from PEM files; a :class:`UsageError`
    naming ``setting`` when they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise UsageError(
            f"{setting}: cannot load the certificate {tls.cert} with its key {tls.key}: {reason}"
        ) from None
    return context
