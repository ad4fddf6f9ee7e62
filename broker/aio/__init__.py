"""Asyncio helpers every layer uses: running the event loop, waiting with a deadline,
closing within a grace period, background tasks that end with their scope.

Imports nothing of Eventwire."""
