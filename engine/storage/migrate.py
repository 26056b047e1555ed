"""Versioned, forward-only migrations.

Files ``migrations/NNNN_name.sql`` apply in order, each in its own transaction, recorded in
``schema_migrations``. A session-level advisory lock makes concurrent runs (several replicas starting
at once) safe: one applies, the others wait and then find nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from engine.errors import ConfigurationError
from engine.storage.dsn import redact_dsn

_LOCK_KEY = 0x4E524C44  # arbitrary, constant: "HRLD"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("engine.storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply pending migrations; returns the ones applied by this call."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in available_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def connect_or_explain(dsn: str) -> asyncpg.Connection:
    """A connection to ``dsn``; one that cannot be made is a ConfigurationError naming the (masked) DSN."""
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise ConfigurationError(f"cannot connect to the database at {redact_dsn(dsn)} (DATABASE_URL): {err}") from None


async def migrate_url(dsn: str) -> list[Migration]:
    conn = await connect_or_explain(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
