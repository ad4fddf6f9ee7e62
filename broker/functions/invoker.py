"""The ``Invoker`` protocol and the registry that finds execution backends by name.

``broker`` never imports an invoker module directly: ``create_invoker`` looks
the kind up in :data:`INVOKERS` (or the ``eventwire.invokers`` entry-point
group) and imports it only when a function uses it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from broker.errors import ConfigError
from broker.models import Outcome

if TYPE_CHECKING:
    from broker.config.models import FunctionConfig

INVOKERS: dict[str, str] = {
    "python": "invokers.python:PythonInvoker",
    "process": "invokers.process:ProcessInvoker",
    "http": "invokers.http:HttpInvoker",
    "deliver": "broker.functions.delivery:DeliveryInvoker",  # built in: external destinations
}


INVOKER_GRACE_S = 5.0
"""How long past an attempt's deadline the dispatcher waits for its invoker before giving up;
an invoker that enforces the timeout itself finishes well within it."""


@dataclass(frozen=True, slots=True)
class InvokeRequest:
    """One attempt of one invocation, as an invoker sees it."""

    request_id: str
    invocation_id: str
    function: str
    function_arn: str
    payload: bytes
    deadline: datetime
    attempt: int
    traceparent: str | None = None
    """The W3C trace context of the attempt's ``invoke`` span, when traced: invokers in
    other processes pass it on (as Lambda's trace header, too)."""


class InvokerInitError(Exception):
    """The invoker could not get the function ready (its handler failed to import ...).

    Reported once per function at start; the invoker then answers each
    invocation with the corresponding function error.
    """


class Invoker(Protocol):
    """Runs one invocation at a time per call and returns its outcome.

    ``invoke`` never raises for a function's failure: it returns a
    ``FunctionError`` (including ``Task.TimedOut`` when the deadline passes) or
    a ``SystemFault`` when the function could not be run at all.
    """

    async def start(self) -> None:
        """Get ready to invoke (import the handler, start processes ...).

        Raises :class:`InvokerInitError` when the function cannot be readied.
        """
        ...

    async def invoke(self, request: InvokeRequest) -> Outcome: ...

    async def close(self) -> None: ...


class InvokerFactory(Protocol):
    def __call__(self, name: str, config: FunctionConfig) -> Invoker: ...


def invoker_factory(kind: str) -> InvokerFactory:
    """The class implementing invoker ``kind``, imported on first use."""
    target = INVOKERS.get(kind)
    if target is None:
        found = [ep for ep in entry_points(group="eventwire.invokers") if ep.name == kind]
        if not found:
            known = ", ".join(sorted(INVOKERS))
            raise ConfigError(f"unknown invoker {kind!r}; expected one of: {known}")
        target = found[0].value
    module_name, _, attr = target.partition(":")
    factory: InvokerFactory = getattr(importlib.import_module(module_name), attr)
    return factory
