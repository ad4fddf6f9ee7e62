"""The SQL store: schema, engine, migrations, the history rows the Redis queue hands
over, and the queries behind the CLI.

May import destinations, config and the domain model; never a queue."""
