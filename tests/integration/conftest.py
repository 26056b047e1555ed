"""Fixtures for tests that run the engine against the real database (no Ray)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.auth import Principal
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from tests.broker.conftest import make, target  # noqa: F401 (a connected broker of each adapter, as there)
from tests.integration.lifecycle_support import Harness, leave_nothing_to_send

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[Repository]:
    pool = await create_pool(database_url, min_size=1, max_size=8)
    yield Repository(pool)
    await pool.close()


@pytest.fixture(scope="session")
def catalog() -> TemplateCatalog:
    return TemplateCatalog(TEMPLATES)


@pytest.fixture
async def tenant(repo: Repository) -> Tenant:
    return await repo.ensure_tenant(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def principal(tenant: Tenant) -> Principal:
    return Principal(tenant=tenant.slug, scopes=frozenset({"send", "read"}))


@pytest.fixture
def metrics() -> MetricsBuffer:
    return MetricsBuffer()


@pytest.fixture
async def nothing_left_to_send(repo: Repository) -> AsyncIterator[None]:
    """A lifecycle test leaves no outbox row or queued message of its own behind."""
    started = await repo.pool.fetchval("SELECT now()")
    yield
    await leave_nothing_to_send(repo, started)


@pytest.fixture
async def h(repo: Repository, catalog: TemplateCatalog, database_url: str) -> AsyncIterator[Harness]:
    """The lifecycle tests' harness: a repository, a catalog and a connected broker on the test database."""
    harness = Harness(repo, catalog, database_url)
    await harness.broker.connect()
    yield harness
    await harness.broker.close()
