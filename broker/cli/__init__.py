"""The ``eventwire`` command line: one module per command group, Typer and Rich.

The top layer: may import everything in ``broker``; nothing imports it."""
