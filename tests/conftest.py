"""Session fixtures for the real services (see tests/support/services.py)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from engine.storage.dsn import with_database
from engine.storage.migrate import migrate_url
from tests.support.services import missing, reachable


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """An admin DSN: DATABASE_URL's server, or the embedded PostgreSQL."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from engine.storage.embedded import embedded_database_url

    # Not under pytest's tmp dir: pytest resets its root to 0700 when it makes new temp dirs, and the
    # embedded server runs as its own user, which then loses access to its data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="herald-test-pg-"))
    return embedded_database_url(data_dir)


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def fresh_database(server_url: str) -> Iterator[str]:
    """Create a migrated database, yield its DSN, drop it afterwards."""
    name = f"herald_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_database(server_url, name))
    url = with_database(server_url, name)
    asyncio.run(migrate_url(url))
    yield url
    asyncio.run(_drop_database(server_url, name))


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped at the end."""
    yield from fresh_database(pg_server_url)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("AMQP_URL")
    if not url:
        missing("RabbitMQ", "AMQP_URL is not set")
    assert url is not None
    if not reachable(url, 5672):
        missing("RabbitMQ", f"nothing answers at {url.split('@')[-1]}")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        missing("Redis", "REDIS_URL is not set")
    assert url is not None
    if not reachable(url, 6379):
        missing("Redis", f"nothing answers at {url.split('@')[-1]}")
    return url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the quickstart tests (each starts its own Ray) before the session's shared stack exists."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("quickstart") else 1)
