"""Watching Eventwire: Prometheus metrics, structured logs with the fields of the work
they are about, and the live figures of warm process pools.

Imports only the domain model (and prometheus-client)."""
