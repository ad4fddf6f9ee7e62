"""Execution backends: each runs one invocation of a function and returns its outcome.

One module per backend (``python`` in-process, ``process``, ``http``), each
implementing :class:`broker.functions.invoker.Invoker`; ``broker`` finds them by name
through :data:`broker.functions.invoker.INVOKERS` and imports only the ones in use.
"""

from __future__ import annotations
