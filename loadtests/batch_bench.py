"""P2, batch accept: Herald's batch intake beside a raw asyncpg COPY of the same rows, in the same run.

    python -m loadtests.batch_bench [--n 50000] [--batch-size 5000] [--database-url postgresql://...]

Herald: request bodies (JSON arrays, encoded before the clock starts) go through what ``POST /api/batch``
runs past the HTTP layer: the body split into items, each item validated (request model, template and
variables, address, its own idempotency key), and the batch stored (COPY into a staging table, one
``INSERT ... SELECT`` claiming keys and writing messages, outbox rows and first events), two batches in
flight. Baseline: the rows Herald wrote per item (idempotency key, message, outbox row, event), built
before the clock starts and written with ``copy_records_to_table`` straight into the same tables, two
batches in flight: the floor any design storing those rows pays on this PostgreSQL.
Without --database-url (or DATABASE_URL) it uses the embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from engine.auth import Principal
from engine.batch import BatchIntake, split_items
from engine.ids import new_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.storage.batch_store import BatchStore
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from loadtests.bench import TEMPLATES, drop, prepare

IN_FLIGHT = 2


def item(i: int, run: str) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": f"user{i}@example.com"},
        "variables": {"code": f"{i % 1000000:06d}"},
        "idempotency_key": f"{run}-{i}",
    }


async def in_flight(jobs: list[Callable[[], Awaitable[object]]], concurrency: int = IN_FLIGHT) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[object]]) -> None:
        async with gate:
            await job()

    start = time.perf_counter()
    await asyncio.gather(*(one(j) for j in jobs))
    return time.perf_counter() - start


async def _jsonb_binary(conn: asyncpg.Connection) -> None:
    """Binary jsonb (a version byte, then the text) on the baseline's own connections only: COPY is binary."""
    for typ in ("jsonb", "json"):
        prefix = b"\x01" if typ == "jsonb" else b""
        await conn.set_type_codec(
            typ,
            encoder=lambda s, p=prefix: p + s.encode(),
            decoder=lambda b, p=prefix: b[len(p) :].decode(),
            schema="pg_catalog",
            format="binary",
        )


def raw_rows(tenant_id: uuid.UUID, run: str, start: int, count: int) -> dict[str, list[tuple[Any, ...]]]:
    """Per item the rows Herald's batch path writes, with the same values."""
    expires = datetime.now(UTC) + timedelta(days=1)
    rows: dict[str, list[tuple[Any, ...]]] = {"idempotency_keys": [], "messages": [], "outbox": [], "events": []}
    for i in range(start, start + count):
        mid = new_id()
        response = json.dumps(
            {"message_id": "msg_" + mid.hex, "status": "queued", "locale": "en-GB", "template": "otp_login:v3"}
        )
        rows["idempotency_keys"].append((tenant_id, f"{run}-{i}", "0" * 64, mid, 202, response, expires))
        rows["messages"].append(
            (
                mid,
                tenant_id,
                "email",
                "otp_login",
                3,
                "en-GB",
                "en-GB",
                json.dumps({"email": f"user{i}@example.com"}),
                json.dumps({"code": f"{i % 1000000:06d}"}),
                json.dumps({"category": "transactional"}),
                "normal",
                f"{run}-{i}",
                "queued",
                "transactional",
            )
        )
        rows["outbox"].append((tenant_id, mid, "notifications.normal", 1))
        rows["events"].append(
            (
                new_id(),
                tenant_id,
                mid,
                "NotificationAccepted",
                json.dumps({"locale": "en-GB", "template": "otp_login:v3"}),
            )
        )
    return rows


_RAW_COLUMNS = {
    "idempotency_keys": ("tenant_id", "key", "request_hash", "message_id", "status_code", "response", "expires_at"),
    "messages": (
        "id",
        "tenant_id",
        "channel",
        "template_id",
        "template_version",
        "locale",
        "requested_locale",
        "to",
        "variables",
        "metadata",
        "priority",
        "idempotency_key",
        "status",
        "category",
    ),
    "outbox": ("tenant_id", "message_id", "queue", "priority"),
    "events": ("id", "tenant_id", "message_id", "type", "meta"),
}


async def raw_copy(dsn: str, tenant_id: uuid.UUID, n: int, batch_size: int) -> float:
    """Seconds to COPY ``n`` items' rows in batches (one transaction each), two batches in flight."""
    run = uuid.uuid4().hex[:8]
    batches = [raw_rows(tenant_id, run, k, min(batch_size, n - k)) for k in range(0, n, batch_size)]
    pool = await asyncpg.create_pool(dsn, min_size=IN_FLIGHT, max_size=IN_FLIGHT, init=_jsonb_binary)
    assert pool is not None

    def job(rows: dict[str, list[tuple[Any, ...]]]) -> Callable[[], Awaitable[None]]:
        async def write() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO batches (id, tenant_id, items, accepted, replayed, rejected)"
                    " VALUES ($1, $2, $3, $3, 0, 0)",
                    new_id(),
                    tenant_id,
                    len(rows["messages"]),
                )
                for table in ("idempotency_keys", "messages", "outbox", "events"):
                    name = "notification_events" if table == "events" else table
                    await conn.copy_records_to_table(name, records=rows[table], columns=_RAW_COLUMNS[table])

        return write

    try:
        return await in_flight([job(b) for b in batches])
    finally:
        await pool.close()


async def herald_batches(dsn: str, tenant_slug: str, n: int, batch_size: int) -> tuple[float, int]:
    """Seconds for Herald to accept ``n`` items in batches of ``batch_size``, and how many it accepted."""
    pool = await create_pool(dsn, min_size=IN_FLIGHT, max_size=IN_FLIGHT + 1)
    repo = Repository(pool)
    intake = Intake(repo, TemplateCatalog(TEMPLATES), metrics=MetricsBuffer(), idempotency_ttl_s=86400)
    batches = BatchIntake(intake, BatchStore(pool))
    principal = Principal(tenant_slug, frozenset({"send"}))
    run = uuid.uuid4().hex[:8]
    bodies = [
        json.dumps([item(i, run) for i in range(k, min(k + batch_size, n))]).encode() for k in range(0, n, batch_size)
    ]
    await batches.submit(principal, [item(-1, run)])  # warm: tenant row, template, staging table
    accepted = 0

    def job(body: bytes) -> Callable[[], Awaitable[None]]:
        async def submit() -> None:
            nonlocal accepted
            result = await batches.submit(principal, split_items(body, "application/json"))
            accepted += result.accepted

        return submit

    try:
        return await in_flight([job(b) for b in bodies]), accepted
    finally:
        await pool.close()


async def p2(dsn: str, n: int, batch_size: int, rounds: int = 3) -> dict[str, float]:
    """Batch accepts/s through Herald and items/s of the raw COPY of the same rows, on the same database.

    Rounds alternate (raw, Herald, raw, Herald, ...) and each side's best round is reported: on a shared
    machine a round is often slowed by someone else's work, and the best is the least disturbed.
    """
    repo = Repository(await create_pool(dsn, min_size=1, max_size=1))
    tenant = await repo.ensure_tenant(f"bench_{uuid.uuid4().hex[:8]}")
    await repo.pool.close()
    raw_s: list[float] = []
    herald_s: list[float] = []
    for _ in range(rounds):
        raw_s.append(await raw_copy(dsn, tenant.id, n, batch_size))
        seconds, accepted = await herald_batches(dsn, tenant.slug, n, batch_size)
        if accepted != n:
            raise RuntimeError(f"Herald accepted {accepted} of {n} items")
        herald_s.append(seconds)
    herald, raw = n / min(herald_s), n / min(raw_s)
    return {
        "batch_accept_per_s": herald,
        "raw_copy_per_s": raw,
        "ratio": herald / raw,
        "batch_accept_median_per_s": n / statistics.median(herald_s),
        "raw_copy_median_per_s": n / statistics.median(raw_s),
    }


async def _with_database(admin: str, body: Callable[[str], Awaitable[dict[str, float]]]) -> dict[str, float]:
    url = await prepare(admin)
    try:
        return await body(url)
    finally:
        await drop(admin, url)


def admin_url(given: str | None) -> str:
    if given:
        return given
    from engine.storage.embedded import embedded_database_url

    return embedded_database_url(Path(tempfile.mkdtemp(prefix="herald-bench-")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    figures = asyncio.run(
        _with_database(admin_url(args.database_url), lambda url: p2(url, args.n, args.batch_size, args.rounds))
    )
    print(json.dumps({k: round(v, 3) if k == "ratio" else round(v) for k, v in figures.items()}, indent=2))
    print(
        f"P2 batch accept: {figures['batch_accept_per_s']:,.0f}/s, raw COPY of the same rows "
        f"{figures['raw_copy_per_s']:,.0f}/s: {figures['ratio']:.2f}x (goals: >= 25,000/s, >= 0.25x)"
    )


if __name__ == "__main__":
    main()
