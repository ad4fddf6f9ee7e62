"""The functions this process serves, each with its invoker ready.

Building the catalog starts every function's invoker. A function whose
invoker cannot start (its handler does not import ...) is reported once, with
the reason, and stays in the catalog: its invocations fail with the
invoker's error and follow the retry policy, as in Lambda; the rest of the
service runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from broker.config.models import FunctionConfig, ProjectConfig
from broker.config.settings import Settings
from broker.destinations import Destination, parse_destination
from broker.destinations.external import ExternalDestination
from broker.functions.delivery import served_functions
from broker.functions.invoker import Invoker, InvokerInitError, invoker_factory
from broker.functions.invoker_settings import local_concurrency
from broker.models import FunctionLimits
from broker.observability.pools import PoolObserver, PoolReporter

log = logging.getLogger("eventwire.functions")


@dataclass(slots=True)
class Deployed:
    """One function as the dispatcher uses it."""

    name: str
    config: FunctionConfig
    invoker: Invoker
    arn: str
    limits: FunctionLimits
    on_success: Destination | None
    on_failure: Destination | None
    init_error: str | None = None
    local_concurrency: int | None = None
    """At most this many at once in this process (its pool's size), if bounded."""
    dead_letter: ExternalDestination | None = None


DEFAULT_RESPONSE_LIMIT = 6 * 1024 * 1024


def _dead_letter(uri: str | None) -> ExternalDestination | None:
    target = parse_destination(uri) if uri else None
    return target if isinstance(target, ExternalDestination) else None


class Catalog(Mapping[str, Deployed]):
    def __init__(
        self, functions: dict[str, Deployed], *, response_limit: int = DEFAULT_RESPONSE_LIMIT
    ) -> None:
        self._functions = functions
        self.response_limit = response_limit
        """A larger response is the function error ``Function.ResponseSizeTooLarge``."""
        self.limits: dict[str, FunctionLimits] = {n: f.limits for n, f in functions.items()}

    def __getitem__(self, name: str) -> Deployed:
        return self._functions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)

    @classmethod
    async def start(
        cls, config: ProjectConfig, settings: Settings, *, observer: PoolObserver | None = None
    ) -> Catalog:
        """Every function's invoker started; pools tell ``observer`` of their processes."""
        functions: dict[str, Deployed] = {}
        for name, fn in served_functions(config).items():
            invoker = invoker_factory(fn.invoker)(name, fn)
            if observer is not None and isinstance(invoker, PoolReporter):
                invoker.observe(observer)  # before start: the warm processes' cold starts
            deployed = Deployed(
                name=name,
                config=fn,
                invoker=invoker,
                arn=settings.function_arn(name),
                limits=FunctionLimits(
                    lease_s=fn.timeout_s + settings.lease_grace_s,
                    reserved_concurrency=fn.reserved_concurrency,
                ),
                on_success=parse_destination(fn.on_success) if fn.on_success else None,
                on_failure=parse_destination(fn.on_failure) if fn.on_failure else None,
                local_concurrency=local_concurrency(fn),
                dead_letter=_dead_letter(fn.dead_letter),
            )
            try:
                await invoker.start()
            except InvokerInitError as exc:
                deployed.init_error = str(exc)
                log.error("function %s cannot start: %s", name, exc)
            functions[name] = deployed
        return cls(functions, response_limit=config.limits.response_bytes)

    async def close(self) -> None:
        for deployed in self._functions.values():
            try:
                await deployed.invoker.close()
            except Exception:
                log.exception("function %s: invoker did not close cleanly", deployed.name)
