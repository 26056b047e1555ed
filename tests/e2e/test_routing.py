"""Smart routing on the running stack, through the API, against the emulators: failover and circuit
breakers (5xx and refused connections), recovery through half-open probes, cost- and content-aware
choices that explain agrees with, reloads, tenants' own credentials, and routes that end in bounded time.

Sends are counted per message at the emulators (a unique code in every message), never at the console
file. Tests that change the routing table restore it afterwards.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import phonenumbers
import pytest
import yaml

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]

#: A sent message the provider's delivery webhook already reached reads ``delivered``.
SENT = ("sent", "delivered")
TERMINAL = (*SENT, "failed", "dead", "expired", "suppressed")


def code() -> str:
    return f"{random.randrange(10**8):08d}"


def gb_phone(i: int) -> str:
    number = f"+4474001{i % 100000:05d}"
    assert phonenumbers.is_valid_number(phonenumbers.parse(number))
    return number


def otp_email(address: str, secret: str, **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "to": {"email": address},
        "variables": {"code": secret},
        "metadata": {"category": "auth"},
        **extra,
    }


def otp_sms(phone: str, secret: str, **extra: Any) -> dict[str, Any]:
    return {
        "channel": "sms",
        "template_id": "otp_login:v2",
        "to": {"phone": phone},
        "variables": {"code": secret},
        "metadata": {"category": "auth"},
        **extra,
    }


def configure(herald: Herald, tenant: str, **config: Any) -> None:
    """Merge keys into a tenant's config (creating the tenant)."""
    herald.token(tenant)
    herald.sql("UPDATE tenants SET config = config || $2::jsonb WHERE slug = $1", tenant, json.dumps(config))


def seeds(channel: str, **reliability: float) -> dict[str, Any]:
    """A tenant's routing override that ranks providers by reliability the way a test needs."""
    return {"channels": {channel: {p: {"reliability": r} for p, r in reliability.items()}}}


class Table:
    """Rewrites the stack's routing table and reloads it; the original comes back at teardown."""

    def __init__(self, herald: Herald) -> None:
        self.herald = herald
        self.original = herald.routing_table.read_text()

    def patch(self, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        doc = yaml.safe_load(self.original)
        mutate(doc)
        self.herald.routing_table.write_text(yaml.safe_dump(doc))
        return self.herald.reload_routing()

    def restore(self) -> None:
        self.herald.routing_table.write_text(self.original)
        self.herald.reload_routing()


@pytest.fixture
def table(herald: Herald) -> Iterator[Table]:
    t = Table(herald)
    yield t
    t.restore()


def fast_breaker(doc: dict[str, Any], channel: str, provider: str) -> None:
    doc["channels"][channel][provider]["breaker"] = {"consecutive_failures": 3, "cooldown_s": 3, "probes": 1}


def send_all(herald: Herald, api: httpx.Client, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = []
    for body in bodies:
        r = post(api, body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["message_id"])
    return [herald.wait_status(api, m, lambda s: s in TERMINAL, timeout_s=45) for m in ids]


def admin(herald: Herald, tenant: str | None = None) -> httpx.Client:
    token = herald.platform_token() if tenant is None else herald.token(tenant, admin=True)
    return httpx.Client(base_url=herald.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def provider_row(herald: Herald, channel: str, provider: str) -> dict[str, Any]:
    with admin(herald) as client:
        r = client.get("/admin/providers")
    assert r.status_code == 200, r.text
    return next(p for p in r.json()["providers"] if p["channel"] == channel and p["provider"] == provider)


def wait_state(herald: Herald, channel: str, provider: str, *states: str, timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        row = provider_row(herald, channel, provider)
        if row["state"] in states:
            return row
        time.sleep(0.2)
    raise AssertionError(f"{provider} stayed {row.get('state')}: {row}")


def gauge(herald: Herald, channel: str, provider: str) -> float | None:
    text = herald.metrics_text()
    wanted = f'provider_circuit_open{{channel="{channel}",provider="{provider}"}}'
    line = next((ln for ln in text.splitlines() if ln.startswith(wanted)), None)
    return None if line is None else float(line.split()[-1])


def explain(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post("/api/route/explain", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def chosen_on_events(view: dict[str, Any]) -> str:
    sent = next(e for e in view["events"] if e["type"] == "NotificationSent")
    return str(sent["meta"]["route"]["chosen"])


# -- what the emulators received -----------------------------------------------------------------------


def at_ses(herald: Herald, secret: str) -> int:
    return sum(secret in (getattr(m, "body", "") or getattr(m, "raw_data", "")) for m in herald.fakes.aws.sent_ses())


def sendgrid_emulator(herald: Herald) -> Any:
    return herald.fakes.sendgrid.emulator


def at_sendgrid(herald: Herald, secret: str, since: int = 0) -> int:
    return sum(secret in json.dumps(r.body) for r in sendgrid_emulator(herald).received[since:])


def twilio_received(herald: Herald) -> list[dict[str, Any]]:
    return list(httpx.get(f"{herald.fakes.env['HERALD_TWILIO_BASE_URL']}/_received", timeout=10).json())


def at_twilio(herald: Herald, secret: str) -> int:
    return sum(secret in json.dumps(r["body"]) for r in twilio_received(herald))


def at_sns(herald: Herald, secret: str) -> int:
    return sum(secret in text for _, text in herald.fakes.aws.sent_sms().values())


# -- failover, breakers, recovery ----------------------------------------------------------------------


@dataclass
class Outage:
    channel: str
    primary: str
    backup: str
    body: Callable[[int, str], dict[str, Any]]
    fail: Callable[[], None]
    recover: Callable[[], None]
    primary_count: Callable[[str], int]  #: copies of a code the primary accepted (after recovery)
    backup_count: Callable[[str], int]
    primary_requests: Callable[[], int]  #: every request the primary saw, failed ones included
    error_class: str


def run_outage(herald: Herald, table: Table, o: Outage) -> None:
    table.patch(lambda doc: fast_breaker(doc, o.channel, o.primary))
    tenant = new_tenant()
    configure(herald, tenant, providers={o.channel: {"allow": [o.primary, o.backup]}})
    configure(herald, tenant, routing=seeds(o.channel, **{o.primary: 1.0, o.backup: 0.5}))
    codes: list[str] = []

    def bodies(n: int) -> list[dict[str, Any]]:
        fresh = [code() for _ in range(n)]
        codes.extend(fresh)
        return [o.body(len(codes) - n + i, c) for i, c in enumerate(fresh)]

    with herald.client(tenant) as api:
        assert explain(api, o.body(0, "000000"))["chosen"] == o.primary
        o.fail()
        try:
            # 1. The primary fails: every message moves to the backup at once, with an attempt row each.
            # Three rounds, so the primary sees at least three calls (a refused connection fails the
            # whole call once, however many messages it carried).
            first = [v for _ in range(3) for v in send_all(herald, api, bodies(2))]
            assert all(v["status"] in SENT for v in first) and {v["provider"] for v in first} == {o.backup}, first
            failed_over = [v for v in first if len(v["attempts"]) == 2]
            assert failed_over, "no message tried the primary"
            for v in failed_over:
                tried = sorted((a["provider"], a["outcome"], (a["error"] or {}).get("class")) for a in v["attempts"])
                assert tried == sorted([(o.backup, "sent", None), (o.primary, "failover", o.error_class)])
            row = wait_state(herald, o.channel, o.primary, "open", "half_open")
            assert row["last_error"].startswith(o.error_class) and row["breakers"][0]["owner"] == "platform"
            assert gauge(herald, o.channel, o.primary) == 1.0
            # 2. Open: the primary gets nothing beyond its probes (one permit per cool-down of 3 s).
            time.sleep(1.5)  # every sender's snapshot has the open breaker by now
            before = o.primary_requests()
            second = []
            for _ in range(4):
                second += send_all(herald, api, bodies(2))
                time.sleep(0.5)
            assert {v["provider"] for v in second} == {o.backup}
            reached = o.primary_requests() - before
            tried_primary = [v for v in second if any(a["provider"] == o.primary for a in v["attempts"])]
            assert len(tried_primary) <= 2, f"{len(tried_primary)} sends tried the primary while it was open"
            assert reached <= len(tried_primary)
            for v in tried_primary:
                candidates = next(e for e in v["events"] if e["type"] == "NotificationSent")["meta"]["route"]
                assert "probe" in candidates["candidates"][0][5]
        finally:
            o.recover()
        # 3. Recovered: after the cool-down a probe succeeds, the breaker closes and traffic comes back.
        deadline = time.monotonic() + 30
        recovered: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not any(v["provider"] == o.primary for v in recovered):
            recovered += send_all(herald, api, bodies(1))
            time.sleep(0.3)
        assert recovered[-1]["provider"] == o.primary, "no probe reached the recovered primary"
        wait_state(herald, o.channel, o.primary, "closed")
        time.sleep(1.5)
        back = send_all(herald, api, bodies(4))
        assert {v["provider"] for v in back} == {o.primary} and {v["status"] for v in back} <= set(SENT)
        assert gauge(herald, o.channel, o.primary) == 0.0
    # Nothing lost, nothing sent twice: each code reached exactly one emulator exactly once.
    copies = {c: o.primary_count(c) + o.backup_count(c) for c in codes}
    assert set(copies.values()) == {1}, {c: n for c, n in copies.items() if n != 1}


def test_a_primary_answering_5xx_fails_over_opens_its_breaker_and_recovers(herald: Herald, table: Table) -> None:
    sendgrid = sendgrid_emulator(herald)
    marks = {"after_recovery": 0}

    def recover() -> None:
        sendgrid.plan.clear()  # no outage any more
        marks["after_recovery"] = len(sendgrid.received)

    run_outage(
        herald,
        table,
        Outage(
            channel="email",
            primary="sendgrid",
            backup="ses",
            body=lambda i, c: otp_email(f"outage-{i}@example.com", c),
            fail=lambda: sendgrid.fail(500, {"errors": [{"message": "Internal Server Error"}]}, outage=True),
            recover=recover,
            primary_count=lambda c: at_sendgrid(herald, c, since=marks["after_recovery"]),
            backup_count=lambda c: at_ses(herald, c),
            primary_requests=lambda: len(sendgrid.received),
            error_class="retryable",
        ),
    )


def test_a_primary_refusing_connections_fails_over_opens_its_breaker_and_recovers(herald: Herald, table: Table) -> None:
    emulator = herald.fakes.env["HERALD_TWILIO_BASE_URL"]
    httpx.post(f"{emulator}/_reset", timeout=10)

    def recover() -> None:
        httpx.post(f"{emulator}/_reset", timeout=10)  # it saw nothing while refusing; count from here
        herald.twilio_proxy.listen()

    run_outage(
        herald,
        table,
        Outage(
            channel="sms",
            primary="twilio",
            backup="sns",
            body=lambda i, c: otp_sms(gb_phone(i), c),
            fail=herald.twilio_proxy.refuse,
            recover=recover,
            primary_count=lambda c: at_twilio(herald, c),
            backup_count=lambda c: at_sns(herald, c),
            primary_requests=lambda: len(twilio_received(herald)),
            error_class="provider_down",
        ),
    )


# -- cost- and content-aware choices, explain ------------------------------------------------------------


def test_cost_routing_per_country_and_explain_agrees_with_the_send(herald: Herald) -> None:
    tenant = new_tenant()
    configure(herald, tenant, providers={"sms": {"allow": ["twilio", "sns"]}})
    # The tenant's own rate for Twilio in the UK undercuts SNS there; in the US the list prices decide.
    configure(herald, tenant, routing={"channels": {"sms": {"twilio": {"prices": {"GB": 0.01}}}}})
    marketing = {"metadata": {"category": "marketing"}}
    with herald.client(tenant) as api:
        for phone, expected in (("+447400123456", "twilio"), ("+14155552671", "sns")):
            body = otp_sms(phone, code(), **marketing)
            plan = explain(api, body)
            assert plan["policy"] == "cheapest" and plan["chosen"] == expected, plan
            costs = {c["provider"]: c["unit_cost_usd"] for c in plan["candidates"] if c["usable"]}
            assert set(costs) == {"twilio", "sns"}  # console: not in the tenant's allow-list
            assert costs[expected] == min(v for v in costs.values() if v is not None)
            assert all(c["reason"] for c in plan["candidates"]) and plan["candidates"][0]["health"] == "closed"
            (view,) = send_all(herald, api, [body])
            assert view["status"] in SENT and view["provider"] == expected and chosen_on_events(view) == expected
            assert float(view["attempts"][-1]["cost_usd"]) == pytest.approx(costs[expected])


def test_auth_and_marketing_to_the_same_number_go_to_different_providers(herald: Herald) -> None:
    tenant = new_tenant()
    configure(herald, tenant, providers={"sms": ["twilio", "sns"]})  # the older bare-list shape
    configure(herald, tenant, routing=seeds("sms", twilio=0.999, sns=0.9))
    phone = "+447400123457"
    with herald.client(tenant) as api:
        auth, promo = otp_sms(phone, code()), otp_sms(phone, code(), metadata={"category": "marketing"})
        assert explain(api, auth)["chosen"] == "twilio"  # reliability first
        assert explain(api, promo)["chosen"] == "sns"  # cheapest: $0.04 vs $0.045 a segment in the UK
        views = send_all(herald, api, [auth, promo])
    assert [v["provider"] for v in views] == ["twilio", "sns"]
    assert [chosen_on_events(v) for v in views] == ["twilio", "sns"]


def test_a_volume_tier_boundary_changes_the_choice(herald: Herald, table: Table) -> None:
    time.sleep(1.5)  # sends of earlier tests reach the board
    volume = provider_row(herald, "sms", "twilio")["volume_this_month"]

    def cheaper_from_the_next_but_one(doc: dict[str, Any]) -> None:
        doc["channels"]["sms"]["twilio"]["prices"]["US"] = [
            {"from": 1, "price": 0.0083},
            {"from": volume + 3, "price": 0.005},  # below SNS's $0.00581 from then on
        ]

    table.patch(cheaper_from_the_next_but_one)
    shopper, other = new_tenant(), new_tenant()
    configure(herald, shopper, providers={"sms": {"allow": ["twilio", "sns"]}})
    configure(herald, other, providers={"sms": {"allow": ["twilio"]}})
    body = otp_sms("+14155552671", code(), metadata={"category": "marketing"})
    with herald.client(shopper) as api:
        assert explain(api, body)["chosen"] == "sns"
        with herald.client(other) as busy:  # two more sends on the platform's Twilio account this month
            assert {
                v["provider"] for v in send_all(herald, busy, [otp_sms("+14155552672", code()) for _ in range(2)])
            } == {"twilio"}
        deadline = time.monotonic() + 10
        while explain(api, body)["chosen"] != "twilio":  # the volume reaches the board within a second
            assert time.monotonic() < deadline, explain(api, body)
            time.sleep(0.2)
        time.sleep(1.5)  # and every sender's snapshot
        (view,) = send_all(herald, api, [body])
    assert view["provider"] == "twilio" and float(view["attempts"][-1]["cost_usd"]) == pytest.approx(0.005)


def test_a_reloaded_table_changes_what_explain_picks_without_a_restart(herald: Herald, table: Table) -> None:
    tenant = new_tenant()
    configure(herald, tenant, providers={"email": {"allow": ["ses", "sendgrid"]}})
    body = otp_email("promo@example.com", code(), metadata={"category": "marketing"})
    with herald.client(tenant) as api:
        before = explain(api, body)
        assert before["chosen"] == "ses"  # $0.0001 vs $0.000399
        reloaded = table.patch(lambda doc: doc["channels"]["email"]["sendgrid"].update(prices={"*": 0.00005}))
        after = explain(api, body)
        assert after["chosen"] == "sendgrid" and after["routing_table_version"] == reloaded["routing_table"]["version"]
        assert after["routing_table_version"] != before["routing_table_version"]
        time.sleep(1.5)  # the senders pick the new table up within their refresh
        (view,) = send_all(herald, api, [body])
    assert view["provider"] == "sendgrid" and chosen_on_events(view) == "sendgrid"


def test_reload_needs_the_platform_scope_and_a_valid_file(herald: Herald, table: Table) -> None:
    tenant = new_tenant()
    with admin(herald, tenant) as tenant_admin:
        assert tenant_admin.post("/admin/routing/reload").status_code == 403
    herald.routing_table.write_text("version: broken\nchannels: {sms: {twilio: {prices: {GB: -1}}}}\n")
    with admin(herald) as platform:
        r = platform.post("/admin/routing/reload")
        assert r.status_code == 422 and "channels.sms.twilio.prices.GB" in r.json()["detail"], r.text
        assert platform.get("/admin/providers").json()["routing_table"]["document_version"] != "broken"


def test_one_tenants_bad_credentials_leave_other_tenants_routing_normally(herald: Herald, table: Table) -> None:
    table.patch(lambda doc: doc["channels"]["email"]["sendgrid"].update(breaker={"consecutive_failures": 3}))
    bad, good = new_tenant(), new_tenant()
    for tenant in (bad, good):
        configure(herald, tenant, providers={"email": {"allow": ["sendgrid", "ses"]}})
        configure(herald, tenant, routing=seeds("email", sendgrid=1.0, ses=0.5))
    with admin(herald, bad) as bad_admin:
        r = bad_admin.put("/admin/credentials/email/sendgrid", json={"HERALD_SENDGRID_API_KEY": "SG.revoked-key"})
        assert r.status_code == 200, r.text
    with herald.client(bad) as api:
        views = [send_all(herald, api, [otp_email(f"bad-{i}@example.com", code())])[0] for i in range(4)]
    assert {v["provider"] for v in views} == {"ses"}
    assert views[0]["attempts"][0]["error"]["class"] == "provider_down"  # SendGrid answered 401
    deadline = time.monotonic() + 10
    while True:
        breakers = provider_row(herald, "email", "sendgrid")["breakers"]
        own = [b for b in breakers if b["owner"] == bad]
        if own and own[0]["state"] == "open":
            break
        assert time.monotonic() < deadline, breakers
        time.sleep(0.2)
    row = provider_row(herald, "email", "sendgrid")
    assert row["state"] == "closed" and gauge(herald, "email", "sendgrid") in (0.0, None)
    with admin(herald, good) as tenant_admin:  # the providers page is the platform's: no tenant sees another's
        assert tenant_admin.get("/admin/providers").status_code == 403
    with herald.client(good) as api:
        body = otp_email("good@example.com", code())
        plan = explain(api, body)
        assert plan["chosen"] == "sendgrid" and plan["candidates"][0]["owner"] == "platform"
        (view,) = send_all(herald, api, [body])
    assert view["provider"] == "sendgrid" and len(view["attempts"]) == 1
    with herald.client(bad) as api:
        plan = explain(api, otp_email("bad@example.com", code()))
    assert plan["chosen"] == "ses", json.dumps(plan)
    sendgrid = next(c for c in plan["candidates"] if c["provider"] == "sendgrid")
    assert sendgrid["owner"] == bad and sendgrid["health"] == "open" and not sendgrid["usable"]


# -- terminal states in bounded time ------------------------------------------------------------------------


def test_messages_no_provider_could_take_fail_with_no_route_at_once(herald: Herald) -> None:
    tenant = new_tenant()
    configure(herald, tenant, providers={"email": {"allow": ["mailgun"]}, "push": {"allow": ["fcm"]}})
    apns = {"channel": "push", "template_id": "otp_login:v3", "to": {"push": {"platform": "apns", "token": "a" * 64}}}
    with herald.client(tenant) as api:
        started = time.monotonic()
        views = send_all(herald, api, [otp_email("nowhere@example.com", code()), {**apns, "variables": {"code": "1"}}])
        elapsed = time.monotonic() - started
        plan = explain(api, otp_email("nowhere@example.com", "1"))
    assert elapsed < 15 and [v["status"] for v in views] == ["failed", "failed"]
    for v in views:
        failed = v["events"][-1]
        assert failed["type"] == "NotificationFailed" and failed["meta"]["reason"] == "no_route"
        assert v["attempts"] == []
    assert "the device token is for apns" in views[1]["events"][-1]["meta"]["detail"]
    assert plan["no_route"] and plan["chosen"] is None


def test_an_sms_whose_only_provider_is_down_ends_within_its_ttl(herald: Herald) -> None:
    tenant = new_tenant()
    configure(herald, tenant, providers={"sms": {"allow": ["twilio"]}})
    herald.twilio_proxy.refuse()
    try:
        with herald.client(tenant) as api:
            started = time.monotonic()
            (view,) = send_all(herald, api, [otp_sms("+447400123458", code(), ttl_seconds=3)])
            elapsed = time.monotonic() - started
    finally:
        herald.twilio_proxy.listen()
    assert view["status"] == "expired" and elapsed < 10, view
    assert view["attempts"][0]["error"]["class"] == "provider_down"


# -- active health checks, persisted volumes ---------------------------------------------------------------


def twilio_sends(herald: Herald) -> int:
    """Messages the Twilio emulator was asked to create (its health checks are not sends)."""
    return sum(r.path.endswith("/Messages.json") for r in herald.fakes.twilio.emulator.received)


def test_a_failing_health_check_opens_the_breaker_with_no_traffic_and_a_passing_one_closes_it(
    herald: Herald, table: Table
) -> None:
    twilio = herald.fakes.twilio.emulator
    account = f"/Accounts/{herald.fakes.env['HERALD_TWILIO_ACCOUNT_SID']}.json"
    tenant = new_tenant()
    configure(herald, tenant, providers={"sms": {"allow": ["twilio", "sns"]}})
    configure(herald, tenant, routing=seeds("sms", twilio=1.0, sns=0.5))
    sends = twilio_sends(herald)
    twilio.fail(500, {"code": 20500, "message": "Internal Server Error"}, outage=True, path=account)
    try:
        checks = {"check_s": 0.5, "check_failures": 2, "cooldown_s": 2}
        table.patch(lambda doc: doc["channels"]["sms"]["twilio"].update(breaker=checks))
        row = wait_state(herald, "sms", "twilio", "open", "half_open")
        (own,) = [b for b in row["breakers"] if b["region"] == "*"]
        assert own["owner"] == "platform" and row["last_error"].startswith("health check: retryable 20500")
        assert gauge(herald, "sms", "twilio") == 1.0
        assert twilio_sends(herald) == sends  # opened by its checks alone
        with herald.client(tenant) as api:
            body = otp_sms(gb_phone(7), code())
            plan = explain(api, body)
            twilio_row = next(c for c in plan["candidates"] if c["provider"] == "twilio")
            assert plan["chosen"] == "sns" and not twilio_row["usable"] and twilio_row["health"] == "open", plan
            time.sleep(1.5)  # every sender's snapshot has it
            (view,) = send_all(herald, api, [body])
        assert view["provider"] == "sns" and [a["provider"] for a in view["attempts"]] == ["sns"]
        assert twilio_sends(herald) == sends
    finally:
        twilio.plan.clear()
    # The account answers again: after the cool-down the next check is the probe, and it closes.
    wait_state(herald, "sms", "twilio", "closed", timeout_s=20)
    assert gauge(herald, "sms", "twilio") == 0.0
    time.sleep(1.5)
    with herald.client(tenant) as api:
        (view,) = send_all(herald, api, [otp_sms(gb_phone(8), code())])
    assert view["provider"] == "twilio" and twilio_sends(herald) == sends + 1


def test_monthly_volumes_and_the_tier_they_reached_survive_a_restart_of_the_control_actor(
    herald: Herald, table: Table
) -> None:
    import ray

    from actors import CONTROL_ACTOR, NAMESPACE

    tenant = new_tenant()
    configure(herald, tenant, providers={"sms": {"allow": ["twilio"]}})
    with herald.client(tenant) as api:
        assert {v["provider"] for v in send_all(herald, api, [otp_sms("+14155552673", code()) for _ in range(2)])} == {
            "twilio"
        }
    time.sleep(1.5)  # the senders' tallies reach the board
    volume = provider_row(herald, "sms", "twilio")["volume_this_month"]
    assert volume >= 2

    def saved() -> int:
        rows = herald.sql(
            "SELECT sends FROM provider_volumes WHERE month = date_trunc('month', now() AT TIME ZONE 'UTC')::date"
            " AND channel = 'sms' AND provider = 'twilio' AND owner = 'platform'"
        )
        return int(rows[0]["sends"]) if rows else 0

    deadline = time.monotonic() + 10
    while saved() != volume:
        assert time.monotonic() < deadline, (saved(), volume)
        time.sleep(0.2)

    def cheaper_from_now_on(doc: dict[str, Any]) -> None:
        doc["channels"]["sms"]["twilio"]["prices"]["US"] = [
            {"from": 1, "price": 0.0083},
            {"from": volume + 1, "price": 0.005},  # below SNS's $0.00581 from the next send on
        ]

    table.patch(cheaper_from_now_on)
    shopper = new_tenant()
    configure(herald, shopper, providers={"sms": {"allow": ["twilio", "sns"]}})
    body = otp_sms("+14155552674", code(), metadata={"category": "marketing"})
    with herald.client(shopper) as api:
        assert explain(api, body)["chosen"] == "twilio"
        actor = ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
        pid = ray.get(actor.health.remote(), timeout=30)["pid"]
        ray.kill(actor, no_restart=False)  # Ray starts it again, with nothing in memory
        deadline = time.monotonic() + 60
        while True:
            try:
                restarted = ray.get(actor.health.remote(), timeout=5)
                if restarted["pid"] != pid and restarted["volumes_loaded"]:
                    break
            except ray.exceptions.RayError:
                pass  # still restarting
            assert time.monotonic() < deadline, "the control actor did not come back"
            time.sleep(0.5)
        assert provider_row(herald, "sms", "twilio")["volume_this_month"] == volume
        plan = explain(api, body)
    assert plan["chosen"] == "twilio", plan
    twilio = next(c for c in plan["candidates"] if c["provider"] == "twilio")
    assert twilio["unit_cost_usd"] == pytest.approx(0.005)
