"""What governance costs on the hot path, against the same path without it, in the same run.

    python -m loadtests.governance_bench [--n 3000] [--database-url postgresql://...]

- accept: Herald's admission (``Intake.submit``) alone, beside quota and budget admission
  (``GovernanceAdmission.admit``, in memory) followed by the same submit, with the reconcile loop
  running (one statement per second per table);
- dispatch: the sender pipeline in batches of 100 to the ``sink`` provider, beside the same with a token
  lease per batch (``LeaseClient.acquire``; limits far above the load) from a governor answering after
  ``--actor-ms`` (0.4 ms: a Ray actor call on a 2-core box, ARCHITECTURE.md).

Each pair runs four times, alternating which goes first; every round is printed and the best of each
counts. On a shared box the rounds spread more than governance costs, so the admission's own time per
accept and the lease calls per batch are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

from drivers.sink import EmailSink
from engine.auth import Principal
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.governance.admission import GovernanceAdmission, Warnings
from engine.governance.buckets import Lease, LeaseRequest, Rate, TokenBuckets
from engine.governance.budgets import Budgets, PriceQuery
from engine.governance.leases import LeaseClient, LocalLeaseSource, Want
from engine.governance.quotas import Quotas
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.retries import RetryPolicy
from engine.storage.budget_store import BudgetStore
from engine.storage.quota_store import QuotaStore
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from engine.tenant_config import validate_config
from loadtests.bench import TEMPLATES, body, drop, gather_limited, prepare

FAR_ABOVE = {"rate_per_second": 1_000_000, "burst": 1_000_000, "per_minute": 10**9, "per_day": 10**10}


class SlowSource(LocalLeaseSource):
    """A governor in this process that answers after ``delay_s``, as a remote actor would."""

    def __init__(self, buckets: TokenBuckets, delay_s: float) -> None:
        super().__init__(buckets)
        self.delay_s = delay_s

    async def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        await asyncio.sleep(self.delay_s)
        return await super().lease(requests)


async def run(dsn: str, n: int, actor_s: float) -> dict[str, float]:
    pool = await create_pool(dsn, min_size=4, max_size=8)
    repo = Repository(pool)
    tenant = await repo.ensure_tenant(f"bench_{uuid.uuid4().hex[:8]}")
    governed = dataclasses.replace(
        tenant,
        config=validate_config({"limits": {"email": FAR_ABOVE}, "budgets": {"email": {"monthly": 10**9}}}),
    )
    principal = Principal(tenant.slug, frozenset({"send"}))
    catalog = TemplateCatalog(TEMPLATES)
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    gate = GovernanceAdmission(Quotas(QuotaStore(pool)), Budgets(BudgetStore(pool), lambda q: Decimal("0.0001")))
    ids: list[uuid.UUID] = []

    async def submit(i: int) -> None:
        accepted = await intake.submit(principal, body(i), uuid.uuid4().hex)
        mid = parse_message_id(str(accepted.body["message_id"]))
        assert mid is not None
        ids.append(mid)

    async def governed_submit(i: int) -> None:
        gate.admit(governed, Channel.EMAIL, PriceQuery(tenant.slug, Channel.EMAIL))
        await submit(i)

    async def ignore(_: Warnings) -> None:
        return None

    stop = asyncio.Event()
    loop = asyncio.create_task(gate.run(stop, on_warnings=ignore))
    off, on = [], []
    for round_ in range(4):  # alternating which goes first
        if round_ % 2 == 0:
            off.append(n / await gather_limited(n, 32, submit))
            on.append(n / await gather_limited(n, 32, governed_submit))
        else:
            on.append(n / await gather_limited(n, 32, governed_submit))
            off.append(n / await gather_limited(n, 32, submit))
    stop.set()
    await loop
    print("accept rounds off:", [round(x) for x in off], "on:", [round(x) for x in on])
    start = time.perf_counter()
    for _ in range(n):
        gate.admit(governed, Channel.EMAIL, PriceQuery(tenant.slug, Channel.EMAIL))
    admit_alone = n / (time.perf_counter() - start)

    dispatcher = Dispatcher(
        repo,
        catalog,
        {Channel.EMAIL: [EmailSink()]},
        policy=RetryPolicy(),
        metrics=MetricsBuffer(),
        options=DispatchOptions(),
    )
    source = SlowSource(TokenBuckets(), actor_s)
    client = LeaseClient([source])
    rate = Rate(FAR_ABOVE["rate_per_second"], FAR_ABOVE["burst"])
    chunks = [ids[k : k + 100] for k in range(0, len(ids), 100)]
    plain, leased, batches = [], [], 0

    async def leased_process(chunk: list[uuid.UUID]) -> None:
        nonlocal batches
        key = (tenant.slug, Channel.EMAIL)
        grant = (await client.acquire({key: Want(len(chunk), rate)}))[key]
        await dispatcher.process(chunk[: grant.granted])
        batches += 1

    async def timed(part: list[list[uuid.UUID]], process: Callable[[list[uuid.UUID]], Awaitable[object]]) -> float:
        start = time.perf_counter()
        for chunk in part:
            await process(chunk)
        return sum(map(len, part)) / (time.perf_counter() - start)

    for round_ in range(4):  # alternating which goes first, so neither gains from the order
        part = chunks[round_ * len(chunks) // 4 : (round_ + 1) * len(chunks) // 4]
        first, second = part[: len(part) // 2], part[len(part) // 2 :]
        if round_ % 2 == 0:
            plain.append(await timed(first, dispatcher.process))
            leased.append(await timed(second, leased_process))
        else:
            leased.append(await timed(first, leased_process))
            plain.append(await timed(second, dispatcher.process))
    print("dispatch rounds off:", [round(x) for x in plain], "on:", [round(x) for x in leased])
    await pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)
    await pool.close()
    return {
        "accept_off_per_s": max(off),
        "accept_quotas_budgets_on_per_s": max(on),
        "dispatch_off_msgs_per_s": max(plain),
        "dispatch_rate_limited_msgs_per_s": max(leased),
        "admit_alone_per_s": admit_alone,
        "acquire_alone_batches_per_s": await _acquire_alone(n),
        "governor_calls": source.calls,
        "batches_leased": batches,
    }


async def _acquire_alone(n: int) -> float:
    """Lease acquisitions per second of one batch of 100, most served from the held block."""
    client = LeaseClient([LocalLeaseSource(TokenBuckets())])
    want = {("t_bench", Channel.EMAIL): Want(100, Rate(1_000_000, 1_000_000))}
    start = time.perf_counter()
    for _ in range(n):
        await client.acquire(want)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--actor-ms", type=float, default=0.4)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    admin = args.database_url
    if not admin:
        from engine.storage.embedded import embedded_database_url

        admin = embedded_database_url(Path(tempfile.mkdtemp(prefix="herald-bench-")))
    url = asyncio.run(prepare(admin))
    try:
        figures = asyncio.run(run(url, args.n, args.actor_ms / 1000))
    finally:
        asyncio.run(drop(admin, url))
    print(json.dumps({k: round(v) for k, v in figures.items()}, indent=2))
    on_off = figures["accept_quotas_budgets_on_per_s"] / figures["accept_off_per_s"]
    print(f"accept, quotas and budgets on / off: {on_off:.2f}x")
    admit_share = figures["accept_off_per_s"] / figures["admit_alone_per_s"]
    print(f"admission's own time per accept: {admit_share:.2%} of an accept")
    leased = figures["dispatch_rate_limited_msgs_per_s"] / figures["dispatch_off_msgs_per_s"]
    print(f"dispatch, rate limiting on / off: {leased:.2f}x")


if __name__ == "__main__":
    main()
