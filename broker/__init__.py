"""Eventwire's core: configuration, domain model, queue, dispatcher, store and CLI."""
