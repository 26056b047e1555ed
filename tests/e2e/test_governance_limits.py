"""Rate limits, quotas and budgets on a stack of two ingress replicas and two senders.

The rate-limit run loads three tenants at once: two far above their ``limits.email.rate_per_second`` and one
without a limit, and measures what the senders sent per second from the messages' ``sent_at``. The
quota and budget tests go through both replicas (Serve spreads requests between them), so they wait
for a reconcile (every second) before asserting what every replica refuses.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from serve_app.ingress import default_replicas
from tests.e2e.conftest import Herald

pytestmark = pytest.mark.ray

REPLICAS = 2
WINDOW_S = 20.0
HOT = {"gl-hot-a": 10.0, "gl-hot-b": 5.0}  #: tenant -> limits.email.rate_per_second
CALM = "gl-calm"
#: Idempotency keys of this run (the Redis cache outlives a session's database).
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def two_replicas(herald: Herald) -> Iterator[Herald]:
    herald.stack.scale_ingress(REPLICAS)
    try:
        yield herald
    finally:
        herald.stack.scale_ingress(herald.settings.ingress_replicas or default_replicas())


def _set_config(herald: Herald, tenant: str, **sections: Any) -> None:
    """Replace top-level sections of a tenant's config (the version trigger tells every process)."""
    herald.token(tenant)
    herald.sql("UPDATE tenants SET config = config || $2::jsonb WHERE slug = $1", tenant, json.dumps(sections))


def _email(i: int, *, tag: str) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login",
        "to": {"email": f"{tag}.{i}@example.com"},
        "variables": {"code": f"{i:06d}"},
    }


async def _post_all(herald: Herald, token: str, bodies: list[dict[str, Any]], concurrency: int = 8) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    ids: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=herald.base_url, headers=headers, timeout=30) as client:

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                r = await client.post("/api/notifications", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
                assert r.status_code == 202, r.text
                ids.append(r.json()["message_id"])

        await asyncio.gather(*(one(b) for b in bodies))
    return ids


async def _trickle(herald: Herald, token: str, n: int, every_s: float, tag: str) -> list[str]:
    """``n`` messages one every ``every_s`` (a tenant far under any limit)."""
    ids = []
    for i in range(n):
        ids += await _post_all(herald, token, [_email(i, tag=tag)], concurrency=1)
        await asyncio.sleep(every_s)
    return ids


def _latencies(herald: Herald, tenant: str, tag: str) -> list[float]:
    rows = herald.sql(
        """SELECT extract(epoch FROM m.sent_at - m.created_at) AS s FROM messages m JOIN tenants t ON t.id = m.tenant_id
           WHERE t.slug = $1 AND m."to"->>'email' LIKE $2 AND m.sent_at IS NOT NULL""",
        tenant,
        f"{tag}.%",
    )
    return [float(r["s"]) for r in rows]


def _wait_sent(herald: Herald, tenant: str, tag: str, n: int, timeout_s: float = 60) -> list[float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = _latencies(herald, tenant, tag)
        if len(found) >= n:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{tenant}: {len(_latencies(herald, tenant, tag))} of {n} {tag} messages sent")


def _sent_times(herald: Herald, tenant: str) -> list[float]:
    rows = herald.sql(
        """SELECT m.sent_at FROM messages m JOIN tenants t ON t.id = m.tenant_id
           WHERE t.slug = $1 AND m.sent_at IS NOT NULL ORDER BY m.sent_at""",
        tenant,
    )
    return [r["sent_at"].timestamp() for r in rows]


@dataclass
class RateRun:
    rates: dict[str, float]  #: sends per second over the window, per hot tenant
    calm_before: list[float]  #: the calm tenant's latencies alone
    calm_during: list[float]  #: and while the hot tenants are held at their limits
    throttled_view: dict[str, Any]  #: GET of a hot message that was throttled


@pytest.fixture(scope="module")
def rate_run(two_replicas: Herald) -> Iterator[RateRun]:
    herald = two_replicas
    for tenant, rate in HOT.items():
        _set_config(herald, tenant, limits={"email": {"rate_per_second": rate, "burst": int(rate)}})
    _set_config(herald, CALM, limits={})
    time.sleep(2.5)  # every replica and sender has the limits

    tokens = {t: herald.token(t) for t in [*HOT, CALM]}  # before any event loop runs (it may create the tenant)
    asyncio.run(_trickle(herald, tokens[CALM], 10, 0.2, "before"))
    before = _wait_sent(herald, CALM, "before", 10)

    async def load() -> None:
        backlog = {t: [_email(i, tag="hot") for i in range(int(rate * (WINDOW_S + 14)))] for t, rate in HOT.items()}
        hot = asyncio.gather(*(_post_all(herald, tokens[t], b) for t, b in backlog.items()))
        await asyncio.sleep(4)  # the hot tenants are at their limits: the calm one sends again, more
        await _trickle(herald, tokens[CALM], 40, 0.1, "during")
        await hot

    asyncio.run(load())
    during = _wait_sent(herald, CALM, "during", 40)
    sent = {t: _sent_times(herald, t) for t in HOT}
    begin = {t: times[0] + 3.0 for t, times in sent.items()}  # past the burst and the first leases
    time.sleep(max(0.0, max(begin.values()) + WINDOW_S + 0.5 - time.time()))
    rates = {}
    for tenant in HOT:
        inside = [t for t in _sent_times(herald, tenant) if begin[tenant] <= t < begin[tenant] + WINDOW_S]
        rates[tenant] = len(inside) / WINDOW_S
    waiting = herald.sql(
        """SELECT m.id FROM messages m JOIN tenants t ON t.id = m.tenant_id
           WHERE t.slug = $1 AND m.status = 'throttled' ORDER BY m.updated_at DESC LIMIT 20""",
        "gl-hot-a",
    )
    assert waiting, "no message of the hot tenant is throttled"
    with herald.client("gl-hot-a") as api:  # the backlog drains meanwhile: the first one still waiting
        views = (api.get(f"/api/notifications/msg_{w['id'].hex}").json() for w in waiting)
        view = next((v for v in views if v["status"] == "throttled"), {"status": "sent before it was read"})
    print(f"sends/s over {WINDOW_S:.0f} s: {rates}; calm median latency alone / during: ", end="")
    print(f"{statistics.median(before):.3f} s / {statistics.median(during):.3f} s")
    try:
        yield RateRun(rates, before, during, view)
    finally:
        for tenant in HOT:  # the backlog drains at once, not over the next tests
            _set_config(herald, tenant, limits={})


def test_a_tenant_at_its_rate_limit_is_held_to_it_and_another_tenants_latency_is_unchanged(rate_run: RateRun) -> None:
    rate = HOT["gl-hot-a"]
    assert abs(rate_run.rates["gl-hot-a"] - rate) <= 0.1 * rate, rate_run.rates
    before, during = statistics.median(rate_run.calm_before), statistics.median(rate_run.calm_during)
    # unchanged: a send is a few hundred milliseconds on this machine either way; a queue behind the hot
    # tenants' backlog would be many seconds
    assert during <= max(2 * before, before + 0.5), (before, during)
    assert max(rate_run.calm_during) < 3.0, sorted(rate_run.calm_during)[-5:]


def test_two_tenants_at_their_limits_leave_the_third_its_share(rate_run: RateRun) -> None:
    for tenant, rate in HOT.items():
        assert abs(rate_run.rates[tenant] - rate) <= 0.1 * rate, (tenant, rate_run.rates)
    assert len(rate_run.calm_during) == 40  # every message of the unlimited tenant went, at once


def test_a_message_over_the_rate_is_throttled_visibly_and_still_sent(rate_run: RateRun, herald: Herald) -> None:
    view = rate_run.throttled_view
    assert view["status"] == "throttled", view["status"]  # waiting for its token, in the backlog
    events = [e for e in view["events"] if e["type"] == "NotificationRetryScheduled"]
    assert events and events[-1]["meta"]["reason"] == "rate_limited", view["events"]
    assert events[-1]["meta"]["limit"] == "limits.email.rate_per_second"
    assert view["attempts"] == []  # no provider was called for it
    failed = herald.sql(
        """SELECT count(*) AS n FROM messages m JOIN tenants t ON t.id = m.tenant_id
           WHERE t.slug = ANY($1::text[]) AND m.status IN ('failed', 'dead')""",
        list(HOT),
    )
    assert failed[0]["n"] == 0  # throttled is never failed


def test_quotas_answer_429_with_the_headers_and_warn_once(two_replicas: Herald) -> None:
    herald, tenant = two_replicas, "gl-quota"
    _set_config(herald, tenant, limits={"sms": {"per_day": 10}}, quotas={"soft_cap_percent": 80})
    herald.token(tenant, admin=True)
    with httpx.Client(
        base_url=herald.base_url, headers={"Authorization": f"Bearer {herald.token(tenant, admin=True)}"}, timeout=30
    ) as admin:
        hook = admin.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/quota-hook"})
        assert hook.status_code == 201, hook.text
    time.sleep(2.5)

    def body(i: int) -> dict[str, Any]:  # a code of its own each: the same code twice would be deduplicated
        return {"channel": "sms", "template_id": "otp_login", "to": {"phone": "+447400123456"},
                "variables": {"code": f"{i:06d}"}}  # fmt: skip

    with herald.client(tenant) as api:
        keys = [f"{RUN}-q-{i}" for i in range(10)]
        first = [
            api.post("/api/notifications", json=body(i), headers={"Idempotency-Key": k}) for i, k in enumerate(keys)
        ]
        assert [r.status_code for r in first] == [202] * 10, [r.text for r in first if r.status_code != 202]
        assert first[0].headers["RateLimit-Policy"] == '"sms.per_day";q=10;w=86400'
        assert first[0].headers["RateLimit"].startswith('"sms.per_day";r=')
        time.sleep(2.5)  # both replicas have reconciled: each knows all 10
        for i in range(4):  # a refused key is free again: its retry is refused the same, never 409
            r = api.post(
                "/api/notifications", json=body(100 + i % 2), headers={"Idempotency-Key": f"{RUN}-q-over-{i % 2}"}
            )
            assert r.status_code == 429, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["Retry-After"]) >= 1
            assert r.headers["RateLimit-Policy"] == '"sms.per_day";q=10;w=86400'
            assert r.headers["RateLimit"].startswith('"sms.per_day";r=0;t=')
            problem = r.json()
            assert problem["type"] == "urn:herald:problem:quota-exceeded"
            assert problem["limit"]["name"] == "limits.sms.per_day" and problem["limit"]["quota"] == 10
        replay = api.post("/api/notifications", json=body(3), headers={"Idempotency-Key": f"{RUN}-q-3"})
        assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
        time.sleep(1.5)
        usage = api.get("/api/usage").json()["channels"]["sms"]
        assert usage["quotas"]["per_day"] == {
            "limit": 10,
            "used": 10,  # the replay counted nothing
            "remaining": 0,
            "resets_at": usage["quotas"]["per_day"]["resets_at"],
        }
    warnings = herald.sql(
        """SELECT a.subject FROM audit_log a JOIN tenants t ON t.id = a.tenant_id
           WHERE t.slug = $1 AND a.action = 'quota.warning'""",
        tenant,
    )
    assert [w["subject"] for w in warnings] == ["limits.sms.per_day"]
    hooks = herald.sql(
        """SELECT d.payload FROM webhook_deliveries d JOIN tenants t ON t.id = d.tenant_id
           WHERE t.slug = $1 AND d.event_type = 'QuotaWarning'""",
        tenant,
    )
    assert len(hooks) == 1 and json.loads(hooks[0]["payload"])["data"]["used"] >= 8


def test_a_limits_change_takes_effect_on_every_replica_within_seconds(two_replicas: Herald) -> None:
    herald, tenant = two_replicas, "gl-change"
    _set_config(herald, tenant, limits={})
    body = _email(0, tag="change")
    with herald.client(tenant) as api:
        assert api.post("/api/notifications", json=body, headers={"Idempotency-Key": f"{RUN}-c-0"}).status_code == 202
        _set_config(herald, tenant, limits={"email": {"per_month": 0}})
        changed = time.monotonic()
        streak, n = 0, 0
        while streak < 12:  # a dozen refusals in a row: both replicas refuse
            n += 1
            r = api.post("/api/notifications", json=body, headers={"Idempotency-Key": f"{RUN}-c-{n}"})
            streak = streak + 1 if r.status_code == 429 else 0
            assert time.monotonic() - changed < 8, "the change did not reach every replica"
    assert time.monotonic() - changed < 8


def test_a_budget_stop_refuses_marketing_and_lets_one_time_codes_through(two_replicas: Herald) -> None:
    herald, tenant = two_replicas, "gl-budget"
    herald.use_providers(tenant, sms=["twilio"])
    # One GB SMS is estimated at 0.045 USD (the dearest configured provider's price in the routing table).
    _set_config(herald, tenant, budgets={"on_exhausted": "required_only", "sms": {"monthly": 0.07}})
    time.sleep(2.5)

    def sms(category: str) -> dict[str, Any]:
        return {
            "channel": "sms",
            "template_id": "otp_login",
            "to": {"phone": "+447400123456"},
            "variables": {"code": "424242"},
            "metadata": {"category": category},
        }

    with herald.client(tenant) as api:
        first = api.post("/api/notifications", json=sms("marketing"), headers={"Idempotency-Key": f"{RUN}-b-0"})
        assert first.status_code == 202, first.text
        accepted = [first.json()["message_id"]]
        # Each replica learns the month's spend with its first reconcile after it has seen the tenant's
        # channel (every second): until then it may accept one more, so at most one per replica goes.
        refused = 0
        for i in range(16):
            r = api.post("/api/notifications", json=sms("marketing"), headers={"Idempotency-Key": f"{RUN}-b-m{i}"})
            if r.status_code == 202:
                accepted.append(r.json()["message_id"])
                refused = 0
                continue
            assert r.status_code == 429, r.text
            assert r.json()["type"] == "urn:herald:problem:budget-exhausted"
            assert r.json()["budget"]["name"] == "budgets.sms.monthly"
            assert int(r.headers["Retry-After"]) >= 1
            refused += 1
            if refused == 6:
                break
            time.sleep(0.4)
        assert refused == 6 and len(accepted) <= REPLICAS, accepted
        otp = api.post("/api/notifications", json=sms("auth"), headers={"Idempotency-Key": f"{RUN}-b-otp"})
        assert otp.status_code == 202, otp.text
        for message_id in [*accepted, otp.json()["message_id"]]:
            herald.wait_status(api, message_id, lambda s: s in ("sent", "delivered"))
        sent = len(accepted) + 1
        deadline = time.monotonic() + 10
        while True:
            usage = api.get("/api/usage").json()
            sms_usage = usage["channels"]["sms"]
            if (sms_usage["sent"] == sent and sms_usage["reserved"] == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert usage["currency"] == "USD"
    assert sms_usage["sent"] == sent and sms_usage["reserved"] == 0, sms_usage  # settled at send
    assert sms_usage["spent"] == pytest.approx(0.045 * sent)  # twilio's actual cost of a GB message
    assert sms_usage["budget"]["monthly"] == 0.07 and sms_usage["budget"]["remaining"] == 0
