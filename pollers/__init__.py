"""Event source pollers, one module per source kind."""
