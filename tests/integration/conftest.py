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
