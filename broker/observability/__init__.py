"""Watching Eventwire: structured logs and the live figures of warm process pools.

Imports only the domain model."""
