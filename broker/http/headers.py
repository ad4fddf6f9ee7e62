"""HTTP header helpers shared by everything in Eventwire that speaks HTTP (the http
invoker, webhook destinations): ``${VAR}`` expansion and ``Retry-After``."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from datetime import UTC, datetime

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_headers(headers: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with each ``${NAME}`` replaced by ``environ[NAME]``.

    Raises ``KeyError`` naming the header and the variable that is not set.
    """
    expanded = {}
    for name, value in headers.items():

        def variable(match: re.Match[str], header: str = name) -> str:
            try:
                return environ[match.group(1)]
            except KeyError:
                raise KeyError(
                    f"header {header}: environment variable {match.group(1)} is not set"
                ) from None

        expanded[name] = _VARIABLE.sub(variable, value)
    return expanded


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
