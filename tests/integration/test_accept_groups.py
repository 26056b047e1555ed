"""Single accepts that arrive together share one statement, against the real PostgreSQL: each message is
stored as a lone accept stores it, a key is claimed once, and one bad message fails alone."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from engine.auth import Principal
from engine.idempotency import request_hash
from engine.ids import parse_message_id
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.states import EventType
from engine.storage import sql
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from tests.integration.lifecycle_support import otp as support_otp

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]


def otp(n: int, **extra: Any) -> dict[str, Any]:
    """A one-time code of its own: its own recipient and code."""
    return support_otp(f"user{n}@example.com", variables={"code": f"{n:06d}"}, **extra)


@pytest.fixture
async def counted(database_url: str) -> AsyncIterator[tuple[Repository, list[str]]]:
    statements: list[str] = []
    pool = await create_pool(database_url, min_size=1, max_size=8, query_logger=lambda r: statements.append(r.query))
    yield Repository(pool), statements
    await pool.close()


async def test_concurrent_accepts_share_statements_and_each_is_stored_whole(
    counted: tuple[Repository, list[str]], catalog: TemplateCatalog
) -> None:
    repo, statements = counted
    tenant = await repo.ensure_tenant(f"t_{uuid.uuid4().hex[:12]}")
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    principal = Principal(tenant=tenant.slug, scopes=frozenset({"send"}))
    await intake.submit(principal, otp(0), "warm")  # the tenant and template read once, before the crowd
    statements.clear()

    n = 40
    bodies = [otp(i, metadata={"tags": ["crowd", f"n{i}"]}, priority="high" if i % 2 else "low") for i in range(n)]
    accepted = await asyncio.gather(*(intake.submit(principal, b, f"key-{i}") for i, b in enumerate(bodies)))

    assert [a.status_code for a in accepted] == [202] * n
    ids = [parse_message_id(a.body["message_id"]) for a in accepted]
    assert len(set(ids)) == n
    grouped = statements.count(sql.ACCEPT_MANY)
    assert grouped >= 1
    assert grouped + statements.count(sql.ACCEPT) < n  # shared: fewer statements than messages

    rows = await repo.pool.fetch(
        """SELECT m.id, m.idempotency_key, m.priority, m."to", m.variables, m.status,
                  (SELECT count(*) FROM outbox o WHERE o.message_id = m.id) AS outbox,
                  (SELECT array_agg(o.queue) FROM outbox o WHERE o.message_id = m.id) AS queues,
                  (SELECT array_agg(e.type) FROM notification_events e WHERE e.message_id = m.id) AS events,
                  (SELECT e.meta FROM notification_events e WHERE e.message_id = m.id LIMIT 1) AS event_meta,
                  (SELECT array_agg(t.tag ORDER BY t.tag) FROM message_tags t WHERE t.message_id = m.id) AS tags,
                  (SELECT k.response FROM idempotency_keys k
                   WHERE k.tenant_id = m.tenant_id AND k.key = m.idempotency_key) AS response
           FROM messages m WHERE m.id = ANY($1::uuid[])""",
        ids,
    )
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == n
    for i, (mid, answer) in enumerate(zip(ids, accepted, strict=True)):
        row = by_id[mid]
        priority = "high" if i % 2 else "low"
        assert row["idempotency_key"] == f"key-{i}"
        assert (row["priority"], row["status"], row["outbox"]) == (priority, "queued", 1)
        assert row["queues"] == [f"notifications.{priority}"]
        assert row["to"] == {"email": f"user{i}@example.com"} and row["variables"] == {"code": f"{i:06d}"}
        assert row["events"] == [EventType.ACCEPTED.value]
        assert row["event_meta"] == {"locale": "en-GB", "template": "otp_login:v3"}
        assert row["tags"] == sorted(["crowd", f"n{i}"])
        assert row["response"] == answer.body  # a replay answers what the first request was told


async def test_the_same_key_sent_twice_at_once_is_stored_once(
    repo: Repository, catalog: TemplateCatalog, tenant: Tenant, principal: Principal
) -> None:
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    await intake.submit(principal, otp(0), "warm")
    body = otp(7)
    # two statements in flight first, so both copies wait together for the next group
    ahead = [intake.submit(principal, otp(1 + i), f"ahead-{i}") for i in range(2)]
    crowd = [intake.submit(principal, otp(100 + i), f"other-{i}") for i in range(6)]
    twice = [intake.submit(principal, body, "twice") for _ in range(2)]
    results = (await asyncio.gather(*ahead, *twice, *crowd))[2:4]
    first, last = results[0], results[-1]
    assert first.body["message_id"] == last.body["message_id"]
    assert sorted([first.replayed, last.replayed]) == [False, True]
    stored = await repo.pool.fetchval(
        "SELECT count(*) FROM messages WHERE tenant_id = $1 AND idempotency_key = 'twice'", tenant.id
    )
    assert stored == 1


async def test_a_message_that_breaks_the_statement_fails_alone(
    repo: Repository, catalog: TemplateCatalog, tenant: Tenant, principal: Principal
) -> None:
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    messages = []
    for i in range(6):
        checked = await intake.check(principal, otp(i, idempotency_key=f"k{i}"))
        message, status, response = intake.new_message(checked, request_hash({"n": i}))
        messages.append((message, status, response))
    bad_message, bad_status, bad_response = messages[3]
    # PostgreSQL's jsonb takes no NUL character: this one message cannot be stored, whatever its company.
    messages[3] = (dataclasses.replace(bad_message, variables={"code": "\u0000"}), bad_status, bad_response)

    results = await asyncio.gather(
        *(repo.accept(m, r, status=s, idempotency_ttl_s=3600) for m, s, r in messages), return_exceptions=True
    )

    assert isinstance(results[3], asyncpg.PostgresError)
    assert [r.created and r.original is None for i, r in enumerate(results) if i != 3] == [True] * 5
    stored = await repo.pool.fetch("SELECT idempotency_key FROM messages WHERE tenant_id = $1", tenant.id)
    assert sorted(r["idempotency_key"] for r in stored) == ["k0", "k1", "k2", "k4", "k5"]
    keys = await repo.pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE tenant_id = $1", tenant.id)
    assert keys == 5  # the bad one's key stays free for a corrected retry
