"""Errors a user can act on: the CLI prints them in one line, without a traceback."""

from __future__ import annotations


class EventwireError(Exception):
    """Base of the errors Eventwire reports to a user as a one-line message."""


class UsageError(EventwireError):
    """A flag, argument, URL or environment variable is wrong."""


class ConfigError(EventwireError):
    """The configuration file is unreadable or invalid; the message names the place."""


class PayloadError(EventwireError):
    """A payload was rejected at enqueue (not JSON, too large ...); nothing was stored."""


class PayloadTooLargeError(PayloadError):
    """A payload over the size limit for its invocation type; nothing was stored."""


class UnknownFunctionError(EventwireError):
    """An invocation named a function that is not configured."""


class SchemaOutOfDateError(EventwireError):
    """The database schema is older (or newer) than this Eventwire expects."""


class NotFoundError(EventwireError):
    """An invocation or dead letter with that id does not exist."""
