"""Analytics figures equal the events sent: messages through intake and the dispatcher, provider events
through ingest, opens and clicks through our own tracking, then GET /api/analytics's engine query and the
rate gauges, all on the real PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest

from drivers.base import OutboundMessage, SendResult
from drivers.email.sendgrid_webhooks import parse_events
from drivers.fake import FakeDriver
from engine.auth import Principal
from engine.channels import Channel
from engine.credentials import CredentialBox
from engine.dispatch import Dispatcher, DispatchOptions
from engine.feedback.analytics import Analytics, GroupBy
from engine.feedback.endpoints import WebhookEndpoints
from engine.feedback.ingest import FeedbackIngest, IngestReport
from engine.feedback.schemas import AnalyticsOut, EndpointOut, IngestOut, QueuedTestEventOut, SecretOut
from engine.feedback.signing_keys import WebhookSecrets
from engine.intake import Intake
from engine.metrics import MetricsAggregator, MetricsBuffer
from engine.problems import ApiProblem
from engine.retries import RetryPolicy
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog
from engine.templating.links import sign_link
from engine.tracking import Tracking
from tests.integration.feedback_support import Sent, body, sendgrid_event

pytestmark = pytest.mark.integration

SECRET = "analytics-test-secret"
BASE = "https://herald.example"
HUMAN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
APPLE_PROXY = ("Mozilla/5.0", "17.58.1.2")
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"


class IdDriver(FakeDriver):
    """A fake provider whose message ids are unique across test runs sharing the database."""

    async def send_one(self, message: OutboundMessage) -> SendResult:
        result = await super().send_one(message)
        return SendResult(result.message_id, self.name, provider_message_id=uuid.uuid4().hex)


async def test_analytics_figures_equal_the_events_sent(repo: Repository, catalog: TemplateCatalog, tenant) -> None:
    provider = f"sg{uuid.uuid4().hex[:6]}"
    driver = IdDriver(provider)
    metrics = MetricsBuffer()
    intake = Intake(repo, catalog, metrics=metrics, idempotency_ttl_s=3600)
    principal = Principal(tenant=tenant.slug, scopes=frozenset({"send"}))
    public_ids = []
    for i in range(10):
        accepted = await intake.submit(
            principal,
            {
                "channel": "email",
                "template_id": "otp_login:v3",
                "to": {"email": f"a{i}@example.com"},
                "variables": {"code": "123456"},
            },
            uuid.uuid4().hex,
        )
        public_ids.append(accepted.body["message_id"])
    dispatcher = Dispatcher(
        repo,
        catalog,
        {Channel.EMAIL: [driver]},
        policy=RetryPolicy(),
        metrics=metrics,
        options=DispatchOptions(base_url=BASE, link_secret=SECRET, tracking=True),
    )
    rows = await repo.pool.fetch("SELECT id FROM messages WHERE tenant_id = $1", tenant.id)
    assert (await dispatcher.process([r["id"] for r in rows])).sent == 10
    attempts = {
        r["message_id"]: r["provider_message_id"]
        for r in await repo.pool.fetch(
            "SELECT message_id, provider_message_id FROM attempts WHERE tenant_id = $1", tenant.id
        )
    }
    sent = {out.message_id: out for out in driver.sent}
    msgs = [
        Sent(
            uuid.UUID(hex=p.removeprefix("msg_")), attempts[uuid.UUID(hex=p.removeprefix("msg_"))], f"a{i}@example.com"
        )
        for i, p in enumerate(public_ids)
    ]

    # Provider events: 8 delivered, 2 of them bounce later, a soft bounce, a complaint.
    ingest = FeedbackIngest(repo.pool, metrics=metrics)
    events = [sendgrid_event(m, "delivered") for m in msgs[:8]]
    events += [sendgrid_event(msgs[8], "bounce", type="blocked"), sendgrid_event(msgs[5], "spamreport")]
    await ingest.ingest(provider, Channel.EMAIL, parse_events(body(events)))
    later = [
        sendgrid_event(m, "bounce", type="bounce", timestamp=int(datetime.now(UTC).timestamp()) + 60) for m in msgs[6:8]
    ]
    await ingest.ingest(provider, Channel.EMAIL, parse_events(body(later)))

    # Our own tracking: the pixel of the rendered HTML, and tracked links.
    tracking = Tracking(repo.pool, secret=SECRET, base_url=BASE)

    def pixel(i: int) -> str:
        html = sent[public_ids[i]].content.html or ""
        return html.split(f'src="{BASE}/t/o/', 1)[1].split('"', 1)[0]

    assert await tracking.open(pixel(0), user_agent=HUMAN, ip="81.2.69.142")
    assert await tracking.open(pixel(0), user_agent=HUMAN, ip="81.2.69.142")
    assert await tracking.open(pixel(0), user_agent=APPLE_PROXY[0], ip=APPLE_PROXY[1])
    assert await tracking.open(pixel(1), user_agent=HUMAN)
    assert await tracking.open(pixel(2), user_agent=APPLE_PROXY[0], ip=APPLE_PROXY[1])
    assert not await tracking.open("forged-token.gif", user_agent=HUMAN)
    for i, agent in ((0, HUMAN), (0, HUMAN), (3, HUMAN), (4, SCANNER)):
        token = sign_link(SECRET, tenant.slug, public_ids[i], "https://shop.example/offer")
        assert await tracking.click(token, user_agent=agent) == "https://shop.example/offer"

    analytics = Analytics(repo.pool)
    today = datetime.now(UTC).date()
    report = await analytics.report(tenant.id, today - timedelta(days=1), today)
    figures = report.total
    assert (figures.sent, figures.delivered, figures.bounced, figures.soft_bounced, figures.complained) == (
        10,
        8,
        2,
        1,
        1,
    )
    assert (figures.opened, figures.machine_opened, figures.clicked, figures.failed) == (2, 2, 2, 0)
    rates = figures.rates()
    assert rates["open_rate"] == 0.25 and rates["click_rate"] == 0.25 and rates["bounce_rate"] == 0.2
    assert rates["delivery_rate"] == 0.8

    grouped = await analytics.report(tenant.id, today, today, (GroupBy.TEMPLATE, GroupBy.PROVIDER, GroupBy.DAY))
    assert [r.as_dict()["template_id"] for r in grouped.rows] == ["otp_login"]
    row = grouped.rows[0].as_dict()
    assert (row["template_version"], row["provider"], row["day"], row["sent"]) == (3, provider, today.isoformat(), 10)

    # Opens and clicks per message: first and last time, count, and how many were people.
    engagement = await repo.pool.fetchrow(
        "SELECT count, human_count, machine_count, first_at <= last_at AS ordered, last_agent "
        "FROM message_engagement WHERE message_id = $1 AND kind = 'open'",
        msgs[0].id,
    )
    assert (engagement["count"], engagement["human_count"], engagement["machine_count"]) == (3, 2, 1)
    assert engagement["ordered"] and engagement["last_agent"] == "apple_privacy_proxy"
    opened_events = await repo.pool.fetch(
        "SELECT meta FROM notification_events WHERE message_id = $1 AND type = 'NotificationOpened' "
        "ORDER BY recorded_at",
        msgs[0].id,
    )
    assert [(e["meta"]["machine"], e["meta"]["first"]) for e in opened_events] == [(False, True), (True, True)]
    clicks = await repo.pool.fetchval(
        "SELECT count(*) FROM notification_events WHERE message_id = $1 AND type = 'NotificationClicked'", msgs[0].id
    )
    assert clicks == 2

    # The gauges of /metrics, through the aggregation every process ships to.
    gauge_metrics = MetricsBuffer()
    await analytics.publish_rates(gauge_metrics, 7)
    aggregator = MetricsAggregator()
    aggregator.apply(gauge_metrics.drain())
    aggregator.apply(metrics.drain())
    text = aggregator.render().decode()
    assert f'open_rate{{template_id="otp_login",tenant="{tenant.slug}"}} 0.25' in text
    assert f'click_rate{{template_id="otp_login",tenant="{tenant.slug}"}} 0.25' in text
    labels = f'channel="email",provider="{provider}",tenant="{tenant.slug}"'
    assert f"notifications_delivered_total{{{labels}}} 8.0" in text
    assert f"notifications_bounced_total{{{labels}}} 2.0" in text


async def test_the_analytics_query_names_what_is_wrong(repo: Repository, tenant) -> None:
    analytics = Analytics(repo.pool)
    with pytest.raises(ApiProblem) as bad_group:
        await analytics.query(tenant, {"group_by": "channel,colour"})
    assert bad_group.value.status == 422 and bad_group.value.errors[0].loc[:2] == ("query", "group_by")
    with pytest.raises(ApiProblem) as backwards:
        await analytics.query(tenant, {"since": "2025-02-01", "until": "2025-01-01"})
    assert backwards.value.errors[0].loc == ("query", "since")
    with pytest.raises(ApiProblem) as not_a_date:
        await analytics.query(tenant, {"since": "yesterday"})
    assert not_a_date.value.errors[0].loc == ("query", "since")
    empty = await analytics.query(tenant, {"group_by": ["day"], "since": None, "until": ""})
    assert empty.rows == () and empty.total.sent == 0 and empty.as_dict()["total"]["open_rate"] is None


async def test_what_the_engine_returns_fits_the_response_models(repo: Repository, tenant) -> None:
    report = await Analytics(repo.pool).query(tenant, {"group_by": "channel,template,provider,day"})
    AnalyticsOut.model_validate(report.as_dict())
    endpoints = WebhookEndpoints(repo.pool, allow_private=True)
    endpoint = await endpoints.create(tenant, {"url": "http://127.0.0.1:9/x", "event_types": ["NotificationOpened"]})
    EndpointOut.model_validate(endpoint.as_dict())
    QueuedTestEventOut.model_validate(await endpoints.send_test(tenant, endpoint.as_dict()["id"]))
    secrets = WebhookSecrets(repo.pool, CredentialBox("k"))
    shown = SecretOut.model_validate(await secrets.show(tenant.id))
    rotated = SecretOut.model_validate(await secrets.rotate_and_show(tenant.id, actor=tenant.slug))
    assert shown.secret.startswith("whsec_") and rotated.secret != shown.secret and rotated.previous_expires_at
    IngestOut.model_validate(asdict(IngestReport(received=3, recorded=2, duplicates=1)))
