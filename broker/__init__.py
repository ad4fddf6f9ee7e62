"""Eventwire's core, one sub-package per concept; docs/architecture.md draws the layers.

At this level only the domain model (models, errors, ids), the message for a missing
extra (extras), reading eventwire.yaml (loading) and the assembly of one serve process
(service)."""
