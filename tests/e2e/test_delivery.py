"""Delivery guarantees on the running stack: outbox under a broker outage, sender crashes, priority."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import ray

from actors import HIGH_SENDER_ACTOR_PREFIX, NAMESPACE, RELAY_ACTOR, SENDER_ACTOR_PREFIX
from engine.ids import parse_message_id
from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def senders(herald: Herald) -> list[Any]:
    return [ray.get_actor(f"{SENDER_ACTOR_PREFIX}{i}", namespace=NAMESPACE) for i in range(herald.settings.senders)]


async def post_many(herald: Herald, token: str, bodies: list[dict[str, Any]], concurrency: int = 32) -> list[str]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=herald.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:

        async def one(body: dict[str, Any]) -> str:
            async with gate:
                r = await client.post("/api/notifications", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
                assert r.status_code == 202, r.text
                return str(r.json()["message_id"])

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def wait_all_terminal(herald: Herald, ids: list[str], timeout_s: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = herald.sql(
            "SELECT 'msg_' || replace(id::text, '-', '') AS mid, status FROM messages WHERE id = ANY($1::uuid[])",
            [mid.removeprefix("msg_") for mid in ids],
        )
        statuses = {r["mid"]: r["status"] for r in rows}
        if len(statuses) == len(ids) and all(s not in ("queued", "sending", "scheduled") for s in statuses.values()):
            return statuses
        time.sleep(0.3)
    raise AssertionError(f"not all terminal: {Counter(statuses.values())}")


def wait_healthy(actor: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return dict(ray.get(actor.health.remote(), timeout=10))
        except ray.exceptions.ActorUnavailableError:  # still restarting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_outbox_keeps_messages_while_the_broker_is_down(herald: Herald) -> None:
    if herald.proxy is None:
        pytest.skip("the outage is played on the RabbitMQ connection (AMQP_URL not set)")
    tenant = new_tenant()
    with herald.client(tenant) as api:
        herald.proxy.cut()
        try:
            r = api.post("/api/notifications", json=otp(), headers={"Idempotency-Key": "outage"})
            assert r.status_code == 202, r.text
            message_id = r.json()["message_id"]
            time.sleep(2.0)
            assert api.get(f"/api/notifications/{message_id}").json()["status"] == "queued"
            pending = herald.sql("SELECT count(*) AS n FROM outbox")
            assert pending[0]["n"] >= 1
        finally:
            herald.proxy.restore()
        herald.wait_status(api, message_id, lambda s: s == "sent", timeout_s=60)


def test_a_one_time_code_goes_from_the_api_to_the_broker_without_the_relay(herald: Herald) -> None:
    if herald.proxy is None:
        pytest.skip("the API hands one-time codes to RabbitMQ itself (AMQP_URL not set)")
    tenant = new_tenant()
    with herald.client(tenant) as api:
        started = time.monotonic()
        r = api.post("/api/notifications", json=otp(priority="high"), headers={"Idempotency-Key": "handoff"})
        assert r.status_code == 202, r.text
        message_id = r.json()["message_id"]
        herald.wait_status(api, message_id, lambda s: s == "sent", timeout_s=10)
        # its outbox row was held for 5 s, out of the relay's sight: only the API can have published it
        assert time.monotonic() - started < 4.0
        left = herald.sql("SELECT count(*) AS n FROM outbox WHERE message_id = $1", parse_message_id(message_id))
        deadline = time.monotonic() + 3
        while left[0]["n"] and time.monotonic() < deadline:
            time.sleep(0.1)
            left = herald.sql("SELECT count(*) AS n FROM outbox WHERE message_id = $1", parse_message_id(message_id))
        assert left[0]["n"] == 0


def nice_of_threads(pid: int) -> set[int]:
    values = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/stat") as f:
            values.add(int(f.read().rsplit(")", 1)[1].split()[16]))  # field 19: nice
    return values


@pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")
def test_bulk_processes_yield_the_cpu_to_the_one_time_codes_path(herald: Herald) -> None:
    s = herald.settings
    assert s.bulk_nice > 0 and s.high_senders > 0
    ours = nice_of_threads(os.getpid())
    assert len(ours) == 1
    base = ours.pop()
    bulk = {min(19, base + s.bulk_nice)}
    for actor in senders(herald):
        assert nice_of_threads(int(wait_healthy(actor)["pid"])) == bulk
    for i in range(s.high_senders):
        dedicated = ray.get_actor(f"{HIGH_SENDER_ACTOR_PREFIX}{i}", namespace=NAMESPACE)
        assert nice_of_threads(int(wait_healthy(dedicated)["pid"])) == {base}
    relay = wait_healthy(ray.get_actor(RELAY_ACTOR, namespace=NAMESPACE))
    # the relay publishes the codes itself when the API does not hand them off (the Postgres queue)
    assert nice_of_threads(int(relay["pid"])) == (bulk if herald.proxy is not None else {base})


def test_killed_senders_lose_nothing_and_send_nothing_twice(herald: Herald) -> None:
    tenant = new_tenant()
    token = herald.token(tenant)
    ids: list[str] = []
    for wave in range(3):  # kill the pool while each wave is flowing; Ray restarts the actors
        bodies = [otp(f"crash{wave}-{i}@example.com") for i in range(250)]
        ids += asyncio.run(post_many(herald, token, bodies))
        time.sleep(0.1 * wave)
        for actor in senders(herald):
            ray.kill(actor, no_restart=False)
    statuses = wait_all_terminal(herald, ids)
    unsent = [mid.removeprefix("msg_") for mid, status in statuses.items() if status != "sent"]
    why = herald.sql(
        "SELECT error_class, error_code, error_detail FROM attempts WHERE message_id = ANY($1::uuid[])", unsent
    )
    assert Counter(statuses.values()) == Counter({"sent": len(ids)}), [dict(r) for r in why]
    counts = Counter(r["message_id"] for r in herald.console_records())
    assert all(counts[mid] == 1 for mid in ids), {m: counts[m] for m in ids if counts[m] != 1}
    assert herald.sql("SELECT count(*) AS n FROM messages WHERE status = 'sending'")[0]["n"] == 0
    for actor in senders(herald):  # the restarted pool is healthy again
        assert wait_healthy(actor)["running"]


def test_high_priority_overtakes_a_low_backlog(herald: Herald) -> None:
    tenant = new_tenant()
    token = herald.token(tenant)
    pool = senders(herald)
    for actor in pool:
        wait_healthy(actor)
    ray.get([a.pause.remote() for a in pool])
    try:
        low = asyncio.run(post_many(herald, token, [otp(f"bulk{i}@example.com", priority="low") for i in range(2000)]))
        high = asyncio.run(post_many(herald, token, [otp("vip@example.com", priority="high")]))[0]
        deadline = time.monotonic() + 30
        while herald.sql("SELECT count(*) AS n FROM outbox")[0]["n"] and time.monotonic() < deadline:
            time.sleep(0.2)  # everything is in the broker before the senders resume
    finally:
        ray.get([a.resume.remote() for a in pool])
    wait_all_terminal(herald, [*low, high], timeout_s=120)
    rows = herald.sql(
        "SELECT priority, sent_at FROM messages WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1)", tenant
    )
    high_at = next(r["sent_at"] for r in rows if r["priority"] == "high")
    low_before = sum(r["sent_at"] < high_at for r in rows if r["priority"] == "low")
    assert low_before < 500, f"{low_before} of 2000 low messages went before the high one"


def test_a_sender_process_killed_mid_batch_loses_nothing_and_resends_at_most_its_request_in_flight(
    herald: Herald,
) -> None:
    """``kill -9`` of a sender actor's process while a wave flows to the SendGrid emulator: Ray restarts
    it, the leases of its claimed batch run out and the relay puts them back; counted per message at the
    emulator (``custom_args.message_id``). Delivery is at-least-once: what the provider accepted from the
    killed process but the process never recorded goes again (one request of a slice, at most)."""
    tenant = new_tenant()
    herald.use_providers(tenant, email=["sendgrid"])
    emulator = herald.fakes.sendgrid.emulator
    since = len(emulator.received)
    victim = senders(herald)[0]
    pid = int(wait_healthy(victim)["pid"])
    ids = asyncio.run(post_many(herald, herald.token(tenant), [otp(f"kill9-{i}@example.com") for i in range(300)]))
    deadline = time.monotonic() + 30
    while len(emulator.received) - since < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # mid-stream: the victim holds claimed batches
    statuses = wait_all_terminal(herald, ids, timeout_s=120)
    assert len(statuses) == len(ids) and set(statuses.values()) <= {"sent", "delivered"}, Counter(statuses.values())
    at_emulator = Counter(
        p["custom_args"]["message_id"]
        for r in emulator.received[since:]
        for p in (r.body or {}).get("personalizations", [])
    )
    assert set(at_emulator) == set(ids), "lost at the provider"
    twice = {m: n for m, n in at_emulator.items() if n > 1}
    print(f"\nsender killed mid-batch: {len(ids)} messages, {len(twice)} sent twice, none lost")
    assert max(at_emulator.values()) <= 2 and len(twice) <= herald.settings.sender_batch, twice
    assert int(wait_healthy(victim)["pid"]) != pid  # a new process took its place
