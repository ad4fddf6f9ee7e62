"""``eventwire serve`` with the scheduler on a faster clock, for tests only.

    python -m tests.support.fast_serve serve -c eventwire.yaml

runs the very service ``eventwire serve`` runs, except that its scheduler
reads a :class:`~tests.support.timer.FastTimer` built from
``FAST_CLOCK_ORIGIN`` (ISO time), ``FAST_CLOCK_STARTED`` (a ``time.time()``)
and ``FAST_CLOCK_SPEED``: processes given the same three agree on the time,
and minutes of schedule time pass in seconds. It is not part of Eventwire:
nothing a user installs can run a scheduler on anything but the real clock.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime

from broker.config.settings import load_settings
from broker.loading import load_config
from broker.observability import logs
from broker.service import Service
from tests.support.timer import FastTimer


def main(argv: list[str]) -> None:
    if argv[:2] != ["serve", "-c"] or len(argv) != 3:
        raise SystemExit("usage: python -m tests.support.fast_serve serve -c CONFIG")
    settings = load_settings(config=argv[2])
    logs.configure(settings.log_level, settings.log_format)
    timer = FastTimer(
        datetime.fromisoformat(os.environ["FAST_CLOCK_ORIGIN"]),
        float(os.environ["FAST_CLOCK_STARTED"]),
        float(os.environ["FAST_CLOCK_SPEED"]),
    )
    service = Service(settings, load_config(settings.config), config_path=argv[2], timer=timer)
    asyncio.run(service.run())


if __name__ == "__main__":
    main(sys.argv[1:])
