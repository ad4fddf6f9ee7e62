"""The SQL store: schema, engine, migrations and the queries behind the CLI."""
