"""Schedules: a poller whose source is the clock."""
