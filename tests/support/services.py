"""Access to the real services the integration tests use.

Outside CI a missing service skips its tests with the reason; in CI
(``CI=true``) it fails them loudly, because CI must run everything.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "EVENTWIRE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("EVENTWIRE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require(url: str, default_port: int, what: str) -> None:
    """Skip (outside CI) or fail (in CI) when ``what`` at ``url`` is not reachable."""
    if reachable(url, default_port):
        return
    message = f"{what} is not reachable at {url}"
    if in_ci():
        pytest.fail(f"{message}: CI must run every test (.ci/run starts the services)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
