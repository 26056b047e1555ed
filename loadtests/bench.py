"""Benchmarks of the hot path against a baseline measured in the same run.

    python -m loadtests.bench [--n 3000] [--database-url postgresql://...]

Prints renders/s of a typical email through Herald's renderer beside plain Jinja2 on the same sources,
and, for the same PostgreSQL:
- intake: Herald's full admission (validate, resolve template, idempotency, one-statement insert)
  beside a bare asyncpg INSERT of the same message row (the floor any design pays);
- dispatch: Herald's sender pipeline (claim, render, send to the ``sink`` provider, record) in batches
  of 100 beside the same pipeline one message at a time (what per-message hops cost);
- routing: the same pipeline in batches of 100 with the routing step on (candidates planned from the
  routing table and a health snapshot, breaker checks, results tallied for the health board) beside
  it with the routing step skipped (the configured order), batches of the two interleaved.
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
from pathlib import Path

from drivers.fake import FakeDriver
from drivers.sink import EmailSink
from engine.auth import Principal
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.ids import new_id, parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.retries import RetryPolicy
from engine.routing import SHIPPED_TABLE, LocalFeed, load_table
from engine.storage.dsn import with_database
from engine.storage.migrate import migrate_url
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def body(i: int) -> dict[str, object]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": f"user{i}@example.com"},
        "variables": {"code": f"{i % 1000000:06d}"},
    }


async def gather_limited(n: int, concurrency: int, make) -> float:  # type: ignore[no-untyped-def]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await make(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - start


async def queued(repo: Repository, tenant_id: uuid.UUID, n: int) -> list[uuid.UUID]:
    """``n`` queued messages written in one statement (the routing comparison needs many batches, not
    the admission path, which is measured above)."""
    ids = [new_id() for _ in range(n)]
    await repo.pool.execute(
        """INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, "to", variables,
                                 priority, status)
           SELECT i, $2, 'email', 'otp_login', 3, 'en-GB', jsonb_build_object('email', 'user' || k || '@example.com'),
                  jsonb_build_object('code', lpad(k::text, 6, '0')), 'normal', 'queued'
           FROM unnest($1::uuid[]) WITH ORDINALITY AS u(i, k)""",
        ids,
        tenant_id,
    )
    return ids


async def run(dsn: str, n: int, routing_n: int) -> dict[str, float]:
    pool = await create_pool(dsn, min_size=4, max_size=8)
    repo = Repository(pool)
    tenant = await repo.ensure_tenant(f"bench_{uuid.uuid4().hex[:8]}")
    principal = Principal(tenant.slug, frozenset({"send"}))
    catalog = TemplateCatalog(TEMPLATES)
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)

    async def bare_insert(i: int) -> None:
        await pool.execute(
            """INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, "to",
                                     variables, priority, status)
               VALUES ($1, $2, 'email', 'otp_login', 3, 'en-GB', $3, $4, 'normal', 'queued')""",
            new_id(),
            tenant.id,
            {"email": f"user{i}@example.com"},
            {"code": "123456"},
        )

    ids: list[uuid.UUID] = []

    async def admit(i: int) -> None:
        accepted = await intake.submit(principal, body(i), uuid.uuid4().hex)
        mid = parse_message_id(str(accepted.body["message_id"]))
        assert mid is not None
        ids.append(mid)

    baseline_s = await gather_limited(n, 32, bare_insert)
    intake_s = await gather_limited(n, 32, admit)

    def dispatcher() -> Dispatcher:
        return Dispatcher(
            repo,
            catalog,
            {Channel.EMAIL: [EmailSink()]},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
        )

    half = len(ids) // 2
    batched, single = ids[:half], ids[half:]
    d = dispatcher()
    start = time.perf_counter()
    for k in range(0, len(batched), 100):
        await d.process(batched[k : k + 100])
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    for mid in single:
        await d.process([mid])
    single_s = time.perf_counter() - start
    routing = await routing_bench(repo, catalog, await queued(repo, tenant.id, routing_n))
    await pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)
    await pool.close()
    return {
        "intake_msgs_per_s": n / intake_s,
        "baseline_bare_insert_per_s": n / baseline_s,
        "dispatch_batched_msgs_per_s": len(batched) / batched_s,
        "dispatch_one_by_one_msgs_per_s": len(single) / single_s,
        **routing,
    }


async def routing_bench(repo: Repository, catalog: TemplateCatalog, ids: list[uuid.UUID]) -> dict[str, float]:
    """Batches of 100 through two dispatchers over the same two in-process providers: one routes (the
    shipped routing table, a health snapshot refreshed every second as the actors' feed is, breaker
    checks and tallies), the other skips the routing step. Batches alternate in pairs, so both see the
    same database and the same warm-up; the first two pairs are not timed; per-message medians."""

    def dispatcher(feed: LocalFeed | None) -> Dispatcher:
        chain = [FakeDriver("ses"), FakeDriver("sendgrid")]  # the same first choice either way
        return Dispatcher(
            repo,
            catalog,
            {Channel.EMAIL: chain},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
            feed=feed,
        )

    routed = dispatcher(LocalFeed(load_table(SHIPPED_TABLE), refresh_s=1.0))
    skipped = dispatcher(None)
    batches = [ids[k : k + 100] for k in range(0, len(ids), 100)]
    per_msg: dict[str, list[float]] = {"on": [], "off": []}
    for i, batch in enumerate(batches):
        which = "on" if (i // 2) % 2 == 0 else "off"  # on, on, off, off, ...: neither always goes first
        d = routed if which == "on" else skipped
        start = time.perf_counter()
        report = await d.process(batch)
        elapsed = time.perf_counter() - start
        if i >= 4 and report.sent:
            per_msg[which].append(elapsed / report.sent)
    # Medians, and the fastest decile: on a shared machine many batches are slowed by someone else's
    # work, and the fastest tenth is the least disturbed measure of each pipeline's own cost.
    return {
        "dispatch_routing_on_msgs_per_s": 1 / statistics.median(per_msg["on"]),
        "dispatch_routing_skipped_msgs_per_s": 1 / statistics.median(per_msg["off"]),
        "dispatch_routing_on_p10_msgs_per_s": 1 / statistics.quantiles(per_msg["on"], n=10)[0],
        "dispatch_routing_skipped_p10_msgs_per_s": 1 / statistics.quantiles(per_msg["off"], n=10)[0],
    }


def render_bench(n: int) -> dict[str, float]:
    """A typical email (otp_login:v3, en-GB: subject, HTML with partials, text part) through Herald's
    renderer beside plain Jinja2 rendering the same sources, warm, in the same run."""
    from jinja2 import DictLoader, Environment, select_autoescape

    from engine.channels import Channel

    catalog = TemplateCatalog(TEMPLATES)
    resolved = catalog.resolve("otp_login:v3", locale="en-GB", channel=Channel.EMAIL)
    variables = {"code": "384921", "ttl": 5}
    catalog.render(resolved, variables, Channel.EMAIL)
    folder = TEMPLATES / "en-GB" / "otp_login" / "v3"
    sources = {p.name: p.read_text() for p in folder.iterdir()}
    sources.update({p.name: p.read_text() for p in (TEMPLATES / "en-GB" / "_partials").iterdir()})
    env = Environment(loader=DictLoader(sources), autoescape=select_autoescape(["html"]))
    env.globals.update(tracked_link=lambda url, *a, **k: url, link=lambda url, *a, **k: url)
    plain = [env.get_template(name) for name in ("subject.txt", "body.html", "body.txt") if name in sources]
    context = {**variables, "unsubscribe_url": None, "message_id": "msg_bench"}
    start = time.perf_counter()
    for _ in range(n):
        catalog.render(resolved, variables, Channel.EMAIL)
    herald_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n):
        for template in plain:
            template.render(context)
    plain_s = time.perf_counter() - start
    return {"render_herald_per_s": n / herald_s, "render_plain_jinja2_per_s": n / plain_s}


async def prepare(dsn: str) -> str:
    import asyncpg

    name = f"herald_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = with_database(dsn, name)
    await migrate_url(url)
    return url


async def drop(dsn: str, url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[-1].split("?")[0]}" WITH (FORCE)')
    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--routing-n", type=int, default=20000, help="messages for the routing comparison")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    rendering = render_bench(args.n)
    admin = args.database_url
    if not admin:
        from engine.storage.embedded import embedded_database_url

        admin = embedded_database_url(Path(tempfile.mkdtemp(prefix="herald-bench-")))
    url = asyncio.run(prepare(admin))
    try:
        figures = asyncio.run(run(url, args.n, args.routing_n))
    finally:
        asyncio.run(drop(admin, url))
    figures.update(rendering)
    print(json.dumps({k: round(v) for k, v in figures.items()}, indent=2))
    print(f"herald render / plain jinja2: {figures['render_herald_per_s'] / figures['render_plain_jinja2_per_s']:.2f}x")
    print(f"intake / bare insert: {figures['intake_msgs_per_s'] / figures['baseline_bare_insert_per_s']:.2f}x")
    print(
        f"dispatch batched / one by one: "
        f"{figures['dispatch_batched_msgs_per_s'] / figures['dispatch_one_by_one_msgs_per_s']:.1f}x"
    )
    for label, suffix in (("median batch", ""), ("fastest tenth of batches", "_p10")):
        on = figures[f"dispatch_routing_on{suffix}_msgs_per_s"]
        off = figures[f"dispatch_routing_skipped{suffix}_msgs_per_s"]
        print(f"dispatch with routing / routing skipped (batches of 100, {label}): {on / off:.3f}x", end=" ")
        print(f"(the routing step costs {(1 - on / off) * 100:.1f} % of dispatch throughput)")


if __name__ == "__main__":
    main()
