"""The ``eventwire`` command line."""
