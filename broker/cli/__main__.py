"""``python -m broker.cli``: the ``eventwire`` command."""

from __future__ import annotations

from broker.cli.main import main

main()
