"""Planner statistics after a burst: a table filled from (nearly) nothing is analyzed at once, and the
relay does so inside a burst's passes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import engine.relay
from engine.relay import Relay, RelayOptions
from engine.storage import table_stats
from engine.storage.repository import Repository
from engine.storage.table_stats import analyze_stale, stale_tables
from tests.integration.lifecycle_support import Harness

pytestmark = pytest.mark.integration


async def _wait_stale(repo: Repository, tables: tuple[str, ...], want: list[str]) -> list[str]:
    found: list[str] = []
    for _ in range(60):  # the inserting backend reports its counts within a second or so
        found = await stale_tables(repo.pool, tables)
        if found == want:
            break
        await asyncio.sleep(0.1)
    return found


async def test_a_table_a_burst_filled_is_analyzed_once_and_then_left_alone(repo: Repository) -> None:
    name = f"burst_{uuid.uuid4().hex[:8]}"
    await repo.pool.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, v text)")
    try:
        await repo.pool.execute(f"INSERT INTO {name} SELECT k, 'x' FROM generate_series(1, 100) AS k")
        await repo.pool.execute(f"ANALYZE {name}")  # 100 rows, as a quiet hour left it
        await repo.pool.execute(f"INSERT INTO {name} SELECT k, 'x' FROM generate_series(101, 5000) AS k")
        assert await _wait_stale(repo, (name,), []) == []  # under MIN_CHANGED_ROWS: left to autovacuum
        await repo.pool.execute(f"INSERT INTO {name} SELECT k, 'x' FROM generate_series(5001, 20000) AS k")
        assert await _wait_stale(repo, (name,), [name]) == [name]
        assert await analyze_stale(repo.pool, (name,)) == [name]
        assert await repo.pool.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1", name) == 20000
        bounds = await repo.pool.fetchval(
            "SELECT cardinality(histogram_bounds::text::text[]) FROM pg_stats WHERE tablename = $1 AND attname = 'id'",
            name,
        )
        assert bounds == table_stats.SAMPLE_TARGET + 1  # the small sample: a tenth of a default ANALYZE's work
        assert await analyze_stale(repo.pool, (name,)) == []  # fresh statistics: nothing to do
    finally:
        await repo.pool.execute(f"DROP TABLE {name}")


async def test_a_table_that_more_than_doubled_in_size_is_stale_before_its_changes_are_counted(
    repo: Repository,
) -> None:
    name = f"burst_{uuid.uuid4().hex[:8]}"
    await repo.pool.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, v text)")
    try:
        await repo.pool.execute(f"INSERT INTO {name} SELECT k, repeat('x', 1000) FROM generate_series(1, 100) AS k")
        await repo.pool.execute(f"ANALYZE {name}")
        # 2,000 rows of 1 kB: far fewer changes than MIN_CHANGED_ROWS, but 2 MB more than the 100 kB analyzed
        await repo.pool.execute(f"INSERT INTO {name} SELECT k, repeat('x', 1000) FROM generate_series(101, 2100) AS k")
        assert await stale_tables(repo.pool, (name,)) == [name]  # at once, whatever the counts say
    finally:
        await repo.pool.execute(f"DROP TABLE {name}")


async def test_the_relay_keeps_the_statistics_inside_a_burst_of_passes(
    h: Harness, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []

    async def analyze(pool, tables=table_stats.HOT_TABLES):  # type: ignore[no-untyped-def]
        calls.append(tables)
        return []

    monkeypatch.setattr(engine.relay, "analyze_stale", analyze)
    relay = Relay(h.repo, h.broker, RelayOptions(batch=1, stats_every_s=0.0), listen_dsn=database_url)
    relay.run_once = _full_batches(3)  # type: ignore[method-assign]  # a burst: every pass takes a full batch
    assert await relay.drain() == 3
    await asyncio.sleep(0)
    assert calls == [table_stats.HOT_TABLES] * 4  # before every pass, the last one included


def _full_batches(n: int):  # type: ignore[no-untyped-def]
    left = [n]

    async def run_once(*, high_only: bool = False) -> int:
        await asyncio.sleep(0.01)
        if left[0] == 0:
            return 0
        left[0] -= 1
        return 1

    return run_once
