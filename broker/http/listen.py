"""Serving HTTP: where to listen (``host:port``), and an aiohttp app served there.

aiohttp is imported only by a process that serves something over HTTP.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from broker.errors import UsageError

if TYPE_CHECKING:
    from aiohttp import web


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class AppServer:
    """What every HTTP endpoint ``serve`` runs shares: serving an app on ``listen`` from
    :meth:`serve` until :meth:`stop` (with :meth:`run` waiting meanwhile, as a poller's
    does)."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.url = ""
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def stop(self) -> None:
        self._stop.set()

    async def serve(
        self,
        app: web.Application,
        setting: str,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Start serving ``app`` (over HTTPS with ``tls``); ``url`` then has the port the
        system picked for port 0. A port that cannot be had is a :class:`UsageError` naming
        ``setting``."""
        from aiohttp import web

        host, port = split_listen(self.listen)
        context = tls
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host or None, port, ssl_context=context).start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(
                f"cannot listen on {host}:{port} ({setting}): {exc.strerror}"
            ) from None
        self._runner = runner
        host, port = runner.addresses[0][:2] if runner.addresses else (host, port)
        shown = f"[{host}]" if ":" in str(host) else host
        self.url = f"{'https' if context else 'http'}://{shown}:{port}"

    async def run(self) -> None:
        try:
            await self._stop.wait()
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
