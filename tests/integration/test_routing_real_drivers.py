"""Routed dispatch with real drivers against their emulators (no Ray), on short retry delays: a route
whose only provider refuses connections ends ``dead`` in bounded time, and a slow primary (past the
driver's timeout) is measured for the duplicates it causes."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.email.sendgrid import SendgridDriver
from drivers.fake import FakeDriver
from drivers.fakes.base import RunningEmulator
from drivers.fakes.sendgrid import SendgridEmulator, start_sendgrid
from drivers.fakes.twilio import env_for
from drivers.sms.twilio import TwilioSmsDriver
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.retries import RetryPolicy
from engine.routing import LocalFeed, parse_table
from tests.integration.test_pipeline import otp
from tests.integration.test_routing_dispatch import Routed, attempts

pytestmark = pytest.mark.integration

TABLE = """
version: real
defaults: {breaker: {consecutive_failures: 5, min_requests: 1000, cooldown_s: 30}}
channels:
  email:
    sendgrid: {prices: {"*": 0.0004}, reliability: 0.999}
    backup: {prices: {"*": 0.0004}, reliability: 0.5}
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


@pytest.fixture(scope="module")
def sendgrid_server() -> Iterator[tuple[RunningEmulator, dict[str, str]]]:
    running, env = start_sendgrid()
    yield running, env
    running.stop()


@pytest.fixture
def sendgrid(sendgrid_server: tuple[RunningEmulator, dict[str, str]]) -> SendgridEmulator:
    emulator = sendgrid_server[0].emulator
    assert isinstance(emulator, SendgridEmulator)
    emulator.reset()
    return emulator


@pytest.fixture
def sendgrid_env(sendgrid_server: tuple[RunningEmulator, dict[str, str]]) -> dict[str, str]:
    return sendgrid_server[1]


def routed(pipe: Routed, drivers: dict[Channel, list[Any]], table: str | None = None) -> None:
    if table is not None:
        pipe.feed = LocalFeed(parse_table(table, source="test"))
    pipe.dispatcher = Dispatcher(
        pipe.repo,
        pipe.intake.catalog,
        drivers,
        policy=RetryPolicy(delays_s=(0.05, 0.05, 0.05), jitter=0.0),
        metrics=pipe.metrics,
        options=DispatchOptions(lease_s=30),
        feed=pipe.feed,
    )


async def test_an_sms_whose_only_provider_refuses_connections_ends_dead(
    repo, catalog, database_url, principal, tenant
) -> None:
    twilio = TwilioSmsDriver.from_env(env_for(f"http://127.0.0.1:{closed_port()}"))
    pipe = Routed(repo, catalog, database_url)
    routed(pipe, {Channel.SMS: [twilio]})
    await pipe.broker.connect()
    try:
        body = {
            "channel": "sms",
            "template_id": "otp_login:v2",
            "to": {"phone": "+447400123456"},
            "variables": {"code": "100200"},
        }
        public_id = await pipe.submit(principal, body)
        started = time.monotonic()
        row = await pipe.until(tenant.id, public_id, {"dead"}, timeout_s=20)
        elapsed = time.monotonic() - started
    finally:
        await pipe.broker.close()
        await twilio.aclose()
    assert elapsed < 20 and row["attempts"] == 4
    assert {(a["provider"], a["error_class"]) for a in row["attempt_rows"]} <= {
        ("twilio", "provider_down"),
        (None, "provider_down"),  # rounds where its breaker was already open: no call, one attempt
    }
    assert sorted({a["attempt_no"] for a in row["attempt_rows"]}) == [1, 2, 3, 4]
    assert row["event_rows"][-1]["type"] == "NotificationDeadLettered"


def sendgrid_count(sendgrid: SendgridEmulator, address: str) -> int:
    to = [{"email": address}]
    return sum(1 for r in sendgrid.received if isinstance(r.body, dict) and r.body["personalizations"][0]["to"] == to)


async def slow_primary(
    repo: Any,
    catalog: Any,
    database_url: str,
    principal: Any,
    tenant: Any,
    sendgrid: SendgridEmulator,
    env: dict[str, str],
    n: int,
    *,
    stays_slow: bool,
) -> tuple[list[dict[str, Any]], list[int], FakeDriver]:
    """``n`` one-time codes while SendGrid answers after 0.6 s (it accepts them; our driver gives up at
    0.3 s): for the first pass only, or (``stays_slow``) throughout. Returns the rows, SendGrid's
    receipts per message and the backup driver."""
    slow = SendgridDriver.from_env({**env, "HERALD_SENDGRID_TIMEOUT_S": "0.3"})
    backup = FakeDriver("backup")
    pipe = Routed(repo, catalog, database_url)
    routed(pipe, {Channel.EMAIL: [slow, backup]}, TABLE)
    await pipe.broker.connect()
    run = uuid.uuid4().hex[:6]
    addresses = [f"slow-{run}-{i}@example.com" for i in range(n)]
    try:
        sendgrid.fail(0, latency_ms=600, outage=True)  # every answer late, none refused
        ids = [await pipe.submit(principal, otp(a)) for a in addresses]
        await pipe.pump()
        if not stays_slow:
            sendgrid.plan.clear()
        rows = [await pipe.until(tenant.id, m, {"sent", "dead", "failed"}) for m in ids]
        await asyncio.sleep(0.5)  # the emulator finishes the slow requests
    finally:
        await pipe.broker.close()
        await slow.aclose()
    return rows, [sendgrid_count(sendgrid, a) for a in addresses], backup


async def test_a_slow_answer_is_retried_on_the_same_provider_and_duplicates_there(
    repo, catalog, database_url, principal, tenant, sendgrid: SendgridEmulator, sendgrid_env: dict[str, str]
) -> None:
    """The measurement behind the closing note. A timed-out send is retried on the same provider (the
    outcome is unknown); SendGrid takes no idempotency key, so what it accepted late goes out twice."""
    rows, at_sendgrid, backup = await slow_primary(
        repo, catalog, database_url, principal, tenant, sendgrid, sendgrid_env, 2, stays_slow=False
    )
    assert [r["status"] for r in rows] == ["sent"] * 2 and backup.sent == []  # never failed over
    assert all([a[1:3] for a in attempts(r)] == [("sendgrid", "unknown"), ("sendgrid", "sent")] for r in rows)
    assert at_sendgrid == [2, 2]  # one duplicate per send that timed out
    print(f"\nslow primary, breaker closed: {sum(at_sendgrid) - 2} duplicates at sendgrid for 2 messages")


async def test_a_primary_that_stays_slow_duplicates_until_its_breaker_opens_then_on_the_failover(
    repo, catalog, database_url, principal, tenant, sendgrid: SendgridEmulator, sendgrid_env: dict[str, str]
) -> None:
    """Every retry of a timed-out send goes to the same slow provider (which accepts each one) until the
    timeouts open its breaker (5 in a row); the pinned retries then fail over (a late one-time code is
    worse than a second one), which sends each message once more."""
    rows, at_sendgrid, backup = await slow_primary(
        repo, catalog, database_url, principal, tenant, sendgrid, sendgrid_env, 2, stays_slow=True
    )
    assert [r["status"] for r in rows] == ["sent"] * 2 and {r["provider"] for r in rows} == {"backup"}
    copies = [n + 1 for n in at_sendgrid]  # + the one the backup sent
    assert len(backup.sent) == 2 and all(c >= 2 for c in copies)
    print(f"\nslow primary, stays slow: copies per message {copies} ({sum(copies) - 2} duplicates for 2)")
