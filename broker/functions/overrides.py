"""Per-invocation changes to a function's retry policy and destinations.

A schedule may override its function's retries, maximum event age and
destinations. The poller writes the overrides into the invocation's
``source`` mapping (``{"overrides": {"retry": {...}, "on_failure": "dlq"}}``)
and the dispatcher runs that invocation with :func:`effective`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from broker.config.models import RetryPolicy
from broker.destinations import parse_destination
from broker.functions.catalog import Deployed

log = logging.getLogger("eventwire.dispatch")


def effective(function: Deployed, source: Mapping[str, Any]) -> Deployed:
    """``function`` as this invocation runs it: with the overrides its source carries."""
    found = source.get("overrides")
    if not found or not isinstance(found, Mapping):
        return function
    try:
        changes: dict[str, Any] = {}
        retry = found.get("retry")
        if isinstance(retry, Mapping) and retry:
            merged = {**function.config.retry.model_dump(), **retry}
            policy = RetryPolicy.model_validate(merged)
            changes["config"] = function.config.model_copy(update={"retry": policy})
        for key in ("on_success", "on_failure"):
            if isinstance(found.get(key), str):
                changes[key] = parse_destination(found[key])
    except ValueError as exc:
        log.warning("%s: ignoring invalid overrides %r (%s)", function.name, dict(found), exc)
        return function
    return replace(function, **changes) if changes else function
