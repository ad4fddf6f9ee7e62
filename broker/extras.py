"""Optional libraries: the one-line error when a configuration or URL needs an extra that is
not installed, naming the extra (``pip install 'eventwire[kafka]'``)."""

from __future__ import annotations

import importlib.util

from broker.errors import UsageError


def require(module: str, extra: str, needed_by: str) -> None:
    """Raise :class:`UsageError` unless ``module`` can be imported.

    Only looks: the library is imported by the module that speaks it, when it is used.
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        found = False
    if not found:
        raise UsageError(f"{needed_by} needs {module}: pip install 'eventwire[{extra}]'")
