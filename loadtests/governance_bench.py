"""What governance costs on the hot path, against the same path without it, in the same run.

    python -m loadtests.governance_bench [--n 3000] [--database-url postgresql://...]

- accept: ``Intake.submit`` as the ingress runs it with quotas and budgets on (``governance=``: the
  tenant's quotas and budget far above the load, the estimate stored with the message, the reconcile
  loop running: one statement per second per table), beside the same intake without governance;
- dispatch: ``Dispatcher.process`` in batches of 100 to the ``sink`` provider as the senders run it
  with rate limiting on (``leases=``: a token lease per batch, limits far above the load, from a governor
  answering after ``--actor-ms``, 0.4 ms: a Ray actor call on a 2-core box, ARCHITECTURE.md), beside the
  same dispatcher without.

Each pair runs ``--rounds`` times (6), alternating which goes first, and every round is printed. What
counts is the median over the rounds of on / off within a round: the two halves of a round run back to
back, so a drift of the box (another process, the table growing) moves both, where a best-of or a mean
of each side would take it for governance. The admission's own time per accept and the lease calls per
batch are printed too.
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


async def run(dsn: str, n: int, actor_s: float, rounds: int) -> dict[str, float]:
    pool = await create_pool(dsn, min_size=4, max_size=8)
    repo = Repository(pool)
    tenant = await repo.ensure_tenant(f"bench_{uuid.uuid4().hex[:8]}")
    # Dedupe off: the same rows are dispatched once per mode, and dedupe is not what is measured here.
    config = {
        "limits": {"email": FAR_ABOVE},
        "budgets": {"email": {"monthly": 10**9}},
        "dedupe": {"auth": {"window_seconds": 0}},
    }
    validate_config(config)
    await pool.execute("UPDATE tenants SET config = $2::jsonb WHERE id = $1", tenant.id, config)
    catalog = TemplateCatalog(TEMPLATES)
    try:
        ids, accept = await _accepts(repo, catalog, tenant.slug, n, rounds)
        dispatch = await _dispatches(repo, catalog, ids, actor_s, rounds)
    finally:
        await pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)
        await pool.close()
    return {**accept, **dispatch, "acquire_alone_batches_per_s": await _acquire_alone(n)}


async def _accepts(
    repo: Repository, catalog: TemplateCatalog, slug: str, n: int, rounds: int
) -> tuple[list[uuid.UUID], dict[str, float]]:
    """The intake with quotas and budgets on beside off; the ids of every message accepted."""
    principal = Principal(slug, frozenset({"send"}))
    gate = GovernanceAdmission(
        Quotas(QuotaStore(repo.pool)), Budgets(BudgetStore(repo.pool), lambda q: Decimal("0.0001"))
    )
    plain = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    governed_intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600, governance=gate)
    governed = await governed_intake.tenant(slug)
    assert governed is not None and governed.config.limits.email.per_day == FAR_ABOVE["per_day"]
    ids: list[uuid.UUID] = []

    def submitter(intake: Intake) -> Callable[[int], Awaitable[None]]:
        async def submit(i: int) -> None:
            accepted = await intake.submit(principal, body(i), uuid.uuid4().hex)
            assert intake is plain or "RateLimit-Policy" in accepted.headers
            mid = parse_message_id(str(accepted.body["message_id"]))
            assert mid is not None
            ids.append(mid)

        return submit

    async def ignore(_: Warnings) -> None:
        return None

    stop = asyncio.Event()
    loop = asyncio.create_task(gate.run(stop, on_warnings=ignore))
    off: list[float] = []
    on: list[float] = []
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    pair = [(off, "off", submitter(plain)), (on, "on", submitter(governed_intake))]
    for round_ in range(rounds):  # alternating which goes first
        for rates, mode, submit in pair if round_ % 2 == 0 else pair[::-1]:
            used = time.process_time()
            rates.append(n / await gather_limited(n, 32, submit))
            cpu[mode].append((time.process_time() - used) / n * 1e6)
    stop.set()
    await loop
    print("accept rounds off:", [round(x) for x in off], "on:", [round(x) for x in on])
    print(
        "accept CPU of this process, µs per message, off:",
        [round(x) for x in cpu["off"]],
        "on:",
        [round(x) for x in cpu["on"]],
    )
    start = time.perf_counter()
    for _ in range(n):
        gate.admit(governed, Channel.EMAIL, PriceQuery(slug, Channel.EMAIL))
    admit_alone = n / (time.perf_counter() - start)
    figures = {
        "accept_off_per_s": statistics.median(off),
        "accept_quotas_budgets_on_per_s": statistics.median(on),
        "accept_on_off": _paired(on, off),
        "accept_cpu_on_off": _paired(cpu["on"], cpu["off"]),
    }
    figures["admit_alone_per_s"] = admit_alone
    return ids, figures


async def _dispatches(
    repo: Repository, catalog: TemplateCatalog, ids: list[uuid.UUID], actor_s: float, rounds: int
) -> dict[str, float]:
    """The dispatcher with rate limiting on beside off, over the accepted messages in batches of 100."""
    source = SlowSource(TokenBuckets(), actor_s)

    def dispatcher(leases: LeaseClient | None) -> Dispatcher:
        return Dispatcher(
            repo,
            catalog,
            {Channel.EMAIL: [EmailSink()]},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
            leases=leases,
        )

    unlimited, limited = dispatcher(None), dispatcher(LeaseClient([source]))
    chunks = [ids[k : k + 100] for k in range(0, len(ids), 100)]
    plain: list[float] = []
    leased: list[float] = []
    cpu: dict[bool, list[float]] = {False: [], True: []}

    async def timed(part: list[list[uuid.UUID]], d: Dispatcher) -> float:
        start, used = time.perf_counter(), time.process_time()
        for chunk in part:
            report = await d.process(chunk)
            assert report.sent == len(chunk), report  # limits far above the load: nothing throttled
        count = sum(map(len, part))
        cpu[d is limited].append((time.process_time() - used) / count * 1e6)
        return count / (time.perf_counter() - start)

    for round_ in range(rounds):  # alternating which goes first, so neither gains from the order
        part = chunks[round_ * len(chunks) // rounds : (round_ + 1) * len(chunks) // rounds]
        halves = (part[: len(part) // 2], part[len(part) // 2 :])
        order = [(plain, unlimited), (leased, limited)] if round_ % 2 == 0 else [(leased, limited), (plain, unlimited)]
        for (rates, d), half in zip(order, halves, strict=True):
            rates.append(await timed(half, d))
    print("dispatch rounds off:", [round(x) for x in plain], "on:", [round(x) for x in leased])
    print(
        "dispatch CPU of this process, µs per message, off:",
        [round(x) for x in cpu[False]],
        "on:",
        [round(x) for x in cpu[True]],
    )
    return {
        "dispatch_off_msgs_per_s": statistics.median(plain),
        "dispatch_rate_limited_msgs_per_s": statistics.median(leased),
        "dispatch_on_off": _paired(leased, plain),
        "dispatch_cpu_on_off": _paired(cpu[True], cpu[False]),
        "governor_calls": source.calls,
        "batches_leased": len(chunks) / 2,
    }


def _rounded(xs: list[float]) -> list[int]:
    return [round(x) for x in xs]


def _paired(on: list[float], off: list[float]) -> float:
    """The median over rounds of on / off within each round."""
    return statistics.median(a / b for a, b in zip(on, off, strict=True))


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
    parser.add_argument("--rounds", type=int, default=6, help="pairs of on/off runs (at least 2)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    admin = args.database_url
    if not admin:
        from engine.storage.embedded import embedded_database_url

        admin = embedded_database_url(Path(tempfile.mkdtemp(prefix="herald-bench-")))
    url = asyncio.run(prepare(admin))
    try:
        figures = asyncio.run(run(url, args.n, args.actor_ms / 1000, max(2, args.rounds)))
    finally:
        asyncio.run(drop(admin, url))
    print(json.dumps({k: round(v, 3) if v < 10 else round(v) for k, v in figures.items()}, indent=2))
    on_off = figures["accept_on_off"]
    print(f"accept, quotas and budgets on / off: {on_off:.3f}x (median of the rounds' ratios)")
    admit_share = figures["accept_off_per_s"] / figures["admit_alone_per_s"]
    print(f"admission's own time per accept: {admit_share:.2%} of an accept")
    leased = figures["dispatch_on_off"]
    print(f"dispatch, rate limiting on / off: {leased:.3f}x (median of the rounds' ratios)")
    print(
        f"CPU of this process per message, on / off: accept {figures['accept_cpu_on_off']:.3f}x, "
        f"dispatch {figures['dispatch_cpu_on_off']:.3f}x (less moved by other processes than throughput)"
    )
    for what, ratio in (("accept", on_off), ("dispatch", leased)):
        print(f"{what}: governance costs {1 - ratio:+.1%} ({'within' if ratio > 0.9 else 'OVER'} the 10 % budget)")


if __name__ == "__main__":
    main()
