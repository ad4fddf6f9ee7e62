"""Watching Eventwire: Prometheus metrics, traces that follow each invocation (W3C trace
context; OpenTelemetry only when configured), structured logs with the fields of the work
they are about, and the live figures of warm process pools.

Imports only the domain model (and prometheus-client; OpenTelemetry in :mod:`.otel`)."""
