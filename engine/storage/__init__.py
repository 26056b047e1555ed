"""Storage: the Postgres schema, migrations and the repository the engine writes through."""
