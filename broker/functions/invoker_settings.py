"""Which configuration keys each invoker kind takes, checked with the file and line.

``FunctionConfig`` has one flat set of keys; a key set for an invoker that
does not use it (``url`` on a process function, ``command`` on an http one)
is a mistake worth one clear line rather than silence::

    eventwire.yaml:7: functions.resize.url: not used by the process invoker (only by: http)
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from broker.config.errors import config_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker.config.models import FunctionConfig

    _Fail = Callable[[str | None, str], None]

OWN_KEYS: dict[str, frozenset[str]] = {
    "python": frozenset({"handler"}),
    "process": frozenset({"handler", "command", "concurrency", "warm", "idle_timeout"}),
    "http": frozenset({"url", "headers", "tls_verify", "concurrency"}),
}
"""The invoker-specific keys each built-in kind takes; the other keys apply to every kind."""

_SPECIFIC = frozenset().union(*OWN_KEYS.values())

DEFAULT_PROCESS_CONCURRENCY = 4
"""Processes a process function may run when neither ``concurrency`` nor
``reserved_concurrency`` is set."""


def process_concurrency(function: FunctionConfig) -> int:
    """How many processes a process function's pool may run at once."""
    return function.concurrency or function.reserved_concurrency or DEFAULT_PROCESS_CONCURRENCY


def local_concurrency(function: FunctionConfig) -> int | None:
    """How many invocations of ``function`` one serve process can run at once, if bounded
    (a process pool's size, an http function's ``concurrency``)."""
    if function.invoker == "process":
        return process_concurrency(function)
    return function.concurrency


def check_invoker_keys(
    name: str, function: FunctionConfig, source: str, lines: dict[tuple[str, ...], int]
) -> None:
    """Raise a :class:`ConfigError` naming the key that does not fit ``function.invoker``."""
    kind = function.invoker
    own = OWN_KEYS.get(kind)
    if own is None:  # an invoker from a plugin: it checks its own keys
        return

    def fail(key: str | None, message: str) -> None:
        path = ("functions", name, key) if key else ("functions", name)
        raise config_error(source, lines, path, message)

    for field in sorted(function.model_fields_set):
        key = type(function).model_fields[field].alias or field
        if key in _SPECIFIC and key not in own:
            users = ", ".join(k for k, keys in OWN_KEYS.items() if key in keys)
            fail(key, f"not used by the {kind} invoker (only by: {users})")
    if kind == "process":
        _check_process(function, fail)
    elif kind == "http":
        _check_http(function, fail)


def _check_process(function: FunctionConfig, fail: _Fail) -> None:
    if function.command is None and not function.handler:
        fail(
            None,
            'a process function needs `command` (e.g. ["./bootstrap"]) or `handler` '
            "(run by the packaged Python bootstrap)",
        )
    if function.command is not None and (
        not function.command or not all(part.strip() for part in function.command)
    ):
        fail("command", 'expected a non-empty list like ["node", "runtime.js"]')
    if function.warm > process_concurrency(function):
        fail(
            "warm",
            f"{function.warm} warm processes exceed the pool's concurrency "
            f"({process_concurrency(function)})",
        )


def _check_http(function: FunctionConfig, fail: _Fail) -> None:
    if not function.url:
        fail(None, "an http function needs `url: http(s)://host/path`")
        return
    parts = urlsplit(function.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail("url", f"expected an http:// or https:// URL with a host, got {function.url!r}")
