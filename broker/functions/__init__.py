"""Functions as the broker runs them: the :class:`Invoker` protocol and the registry
of invoker kinds, invoker settings, the catalog of deployed functions, synchronous
invoke, the built-in functions that deliver to external destinations, per-source
overrides, and publishing the figures of warm pools.

May import queue, store, destinations, config and the domain model; never dispatch."""
