"""What the broker knows of event sources: the :class:`Poller` protocol, the registry
that finds a poller by kind (the modules in ``pollers/`` and the Lambda API), and
the schedule source protocol with its expression check.

May import queue, config and the domain model; never a poller itself except by name."""
