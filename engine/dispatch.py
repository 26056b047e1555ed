"""The send pipeline for one batch of message ids: claim -> TTL -> render -> route -> send -> record.

Everything a sender actor does is here; the actor only feeds it ids from the broker. Per batch it
costs two SQL statements (claim, record) and one driver call per provider a part of the batch goes to.
Routing (``engine.routing``) ranks each message's candidates from a local snapshot of provider health
and the routing table; ``engine.routed`` walks those candidates, failing over by failure class.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from engine.channels import Channel, Priority, dlq_queue, priority_queue
from engine.credentials import TenantDrivers, sealed_for
from engine.dedupe import RecipientDedupe
from engine.delivery import Address, Attachment, Driver, OutboundMessage, SendResult
from engine.errors import (
    DispatchError,
    FailureClass,
    PermanentError,
    ProviderDownError,
    RenderError,
    RetryableError,
)
from engine.governance.buckets import BucketKey, Rate
from engine.governance.leases import LeaseClient, Want, take_granted
from engine.governance.recipients import RecipientCheck, RecipientGate, suppressed_by
from engine.ids import format_message_id
from engine.metrics import MetricsBuffer
from engine.models import ClaimedMessage, Tenant
from engine.outcomes import Outcome, TriedProvider
from engine.retries import Action, RetryPolicy
from engine.routed import Ending, Journey, Router, Try
from engine.routing import RoutePlan, RoutingFeed, RoutingView
from engine.states import EventType, Status
from engine.storage.dedupe_store import DedupeStore
from engine.storage.repository import Repository
from engine.templating import RenderContext, TemplateCatalog, TemplateError
from engine.templating.links import sign_unsubscribe, unsubscribe_url
from engine.templating.whatsapp import WhatsappSpec
from engine.tenant_templates import TenantTemplateCache

log = logging.getLogger(__name__)


class AttachmentResolver(Protocol):
    """Turns stored attachment references into what drivers send (the runtime hands one in)."""

    async def resolve(self, refs: Sequence[object]) -> tuple[Attachment, ...]: ...


async def _one_turn() -> None:
    await asyncio.sleep(0)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BatchReport:
    claimed: int
    sent: int
    retried: int
    failed: int


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    lease_s: float = 30.0
    base_url: str = "http://127.0.0.1:8000"
    link_secret: str = ""
    email_from: str | None = None
    tracking: bool = False


class Dispatcher:
    """Sends batches of claimed messages through each channel's provider chain (failover order)."""

    def __init__(
        self,
        repo: Repository,
        catalog: TemplateCatalog,
        drivers: Mapping[Channel, Sequence[Driver]],
        *,
        policy: RetryPolicy,
        metrics: MetricsBuffer,
        options: DispatchOptions,
        tenant_templates: TenantTemplateCache | None = None,
        tenant_drivers: TenantDrivers | None = None,
        attachments: AttachmentResolver | None = None,
        feed: RoutingFeed | None = None,
        dedupe: RecipientDedupe | None = None,
        recipients: RecipientGate | None = None,
        test_sinks: Mapping[Channel, Driver] | None = None,
        clock: Callable[[], datetime] = utcnow,
        leases: LeaseClient | None = None,
    ) -> None:
        """``recipients``: the preference check (none: preferences are not read); ``test_sinks``: where
        messages sent with a test-mode API key go, per channel (none: they route like any other)."""
        self.repo = repo
        self.catalog = catalog
        self.drivers = drivers
        self.policy = policy
        self.metrics = metrics
        self.options = options
        self.tenant_templates = tenant_templates
        self.tenant_drivers = tenant_drivers
        self.attachments = attachments
        #: Without a feed the routing step is skipped: the configured order, no health, no prices.
        self.feed = feed
        #: Recipient dedupe (``dedupe.<category>.window_seconds``), decided in PostgreSQL across senders.
        self.dedupe = dedupe or RecipientDedupe(DedupeStore(repo.pool), link_secret=options.link_secret)
        self.recipients = recipients
        self.test_sinks = test_sinks or {}
        self.clock = clock
        self.router = Router(drivers, self._tenant_driver, feed, clock=clock)
        #: Tokens of the tenants' rate limits (``limits.<channel>.rate_per_second``); None: no limits.
        self.leases = leases

    async def process(
        self, ids: Sequence[uuid.UUID], *, yield_to: Callable[[], Awaitable[object]] | None = None
    ) -> BatchReport:
        """Send one batch. ``yield_to`` is awaited between the messages it renders (default: one turn of
        the event loop), so other work of the sender (its high lane) runs inside a big batch."""
        pause = yield_to or _one_turn
        claimed = await self.repo.claim(ids, self.options.lease_s)
        if not claimed:
            return BatchReport(0, 0, 0, 0)
        if self.tenant_templates is not None:
            for m in {m.tenant_slug: m for m in claimed}.values():
                await self.tenant_templates.ensure(m.tenant_slug, m.tenant_id, m.tenant_templates_version)
        started = self.clock()
        outcomes: list[Outcome] = []
        journeys: list[Journey] = []
        sendable = await self._within_rate(claimed, started, outcomes)
        tests: list[tuple[ClaimedMessage, OutboundMessage]] = []
        view = self.router.view()
        wall = started.timestamp()
        refused = await self._refused_by_preferences(sendable)
        ready: list[tuple[ClaimedMessage, OutboundMessage]] = []
        for msg in sendable:
            # Rendering is CPU work: give the event loop back between messages, so the sender's reserved
            # high-priority lane runs its one-time code in the middle of a big low batch.
            await pause()
            prepared = await self._prepare(msg, started, refused.get(msg.id))
            if isinstance(prepared, Outcome):
                outcomes.append(prepared)
            else:
                ready.append((msg, prepared))
        firsts = await self.dedupe.firsts(ready)
        copies = [msg for msg, _ in ready if msg.id in firsts]
        outcomes.extend(self._deduplicated(msg, started, firsts[msg.id]) for msg in copies)
        for msg, prepared in ready:
            if msg.id in firsts:
                continue
            if is_test(msg) and msg.channel in self.test_sinks:
                tests.append((msg, prepared))
                continue
            journey = self.router.journey(msg, prepared, view, wall)
            if journey.plan.no_route:
                outcomes.append(self._no_route(msg, started, journey.plan))
            else:
                journeys.append(journey)
        await self.router.send(journeys)
        outcomes.extend(self._journey_outcome(j, started, view) for j in journeys)
        outcomes.extend(await self._send_tests(tests, started))
        await self.repo.record(outcomes)
        if copies and self.dedupe.on_deduplicated is not None:
            await self.dedupe.on_deduplicated.deduplicated(copies)
        self._count(outcomes, claimed)
        self._count_tries(journeys)
        return BatchReport(
            claimed=len(claimed),
            sent=sum(o.status is Status.SENT for o in outcomes),
            retried=sum(o.status in (Status.QUEUED, Status.THROTTLED) for o in outcomes),
            failed=sum(o.status in (Status.FAILED, Status.DEAD, Status.EXPIRED) for o in outcomes),
        )

    # -- steps -------------------------------------------------------------------------------------

    async def _within_rate(
        self, claimed: Sequence[ClaimedMessage], now: datetime, outcomes: list[Outcome]
    ) -> list[ClaimedMessage]:
        """The messages the tenants' rate limits let go now (one governor call per shard at most); the
        others leave the batch ``throttled``, rescheduled for when their tokens are due."""
        if self.leases is None:
            return list(claimed)
        # Past its TTL, a message needs no token: it ends expired (_prepare). Throttled again instead, it
        # came back at once (its retry is capped at the TTL) and spun until a token was free.
        past_ttl = [m for m in claimed if m.expires_at is not None and m.expires_at <= now]
        if past_ttl:
            claimed = [m for m in claimed if m.expires_at is None or m.expires_at > now]
        firsts: dict[BucketKey, ClaimedMessage] = {}
        counts: dict[BucketKey, int] = {}
        highest: dict[BucketKey, Priority] = {}
        for m in claimed:  # once per message: no object built here
            key = (m.tenant_slug, m.channel)
            if key not in firsts:
                firsts[key], counts[key], highest[key] = m, 1, m.priority
            else:
                counts[key] += 1
                if m.priority.rank < highest[key].rank:
                    highest[key] = m.priority
        rates: dict[BucketKey, Rate | None] = {}
        wants: dict[BucketKey, Want] = {}
        for key, first in firsts.items():
            bucket = first.tenant_config.limits.channel(first.channel).bucket()
            rates[key] = Rate(*bucket) if bucket else None
            wants[key] = Want(counts[key], rates[key], highest[key], first.tenant_config_version)
        grants = await self.leases.acquire(wants)
        go, later = take_granted(claimed, lambda m: (m.tenant_slug, m.channel), grants)
        queued: dict[BucketKey, int] = {}
        for msg, wait in later:
            key = (msg.tenant_slug, msg.channel)
            place = queued[key] = queued.get(key, 0) + 1
            rate = rates[key]
            # Spread the waiting ones over the tokens to come, so they do not all come back at once.
            delay = wait + (place - 1) / rate.per_second if rate is not None else wait
            outcomes.append(_throttled(msg, now, delay, rate))
            self.metrics.inc("notifications_throttled_total", channel=msg.channel.value, tenant=msg.tenant_slug)
        return past_ttl + go

    async def _refused_by_preferences(self, claimed: Sequence[ClaimedMessage]) -> dict[uuid.UUID, str]:
        """The messages their recipients' preferences stop, with the reason (one statement per batch)."""
        if self.recipients is None:
            return {}
        checks = {
            m.id: RecipientCheck(
                Tenant(m.tenant_id, m.tenant_slug, m.tenant_slug, m.tenant_config),
                m.to.get("user_id"),
                m.category,
                m.channel,
            )
            for m in claimed
            if m.to.get("user_id") and m.category
        }
        return await self.recipients.refused(checks) if checks else {}

    async def _send_tests(
        self, tests: Sequence[tuple[ClaimedMessage, OutboundMessage]], started: datetime
    ) -> list[Outcome]:
        """Messages of test-mode API keys: to the channel's sink, never to a provider."""
        outcomes = []
        for channel, sink in self.test_sinks.items():
            batch = [(m, out) for m, out in tests if m.channel is channel]
            if batch:
                results = await sink.send_batch([out for _, out in batch])
                outcomes += [
                    replace(self._result_outcome(m, r, started, 0.0), meta={**self._sent_meta(r), "test": True})
                    for (m, _), r in zip(batch, results, strict=True)
                ]
        return outcomes

    async def _prepare(
        self, msg: ClaimedMessage, started: datetime, refused: str | None = None
    ) -> OutboundMessage | Outcome:
        """The message ready for its driver, or the outcome that ends it before any provider call."""
        if msg.expires_at is not None and msg.expires_at <= started:
            return self._expired(msg, started)
        required = msg.tenant_config.preferences.required_categories
        if suppressed_by(msg.suppression_categories, msg.category, required):
            return self._suppressed(msg, started)
        if refused is not None:
            return self._suppressed(msg, started, refused)
        try:
            out = self._outbound(msg, started)
        except (TemplateError, RenderError) as err:
            return self._render_failed(msg, started, err)
        if msg.attachments and msg.channel is Channel.EMAIL:
            try:
                out = await self._attach(out, msg)
            except DispatchError as err:
                return self._failure_outcome(msg, err, started, provider=None)
        return out

    def _outbound(self, msg: ClaimedMessage, now: datetime) -> OutboundMessage:
        resolved = self.catalog.resolve(
            f"{msg.template_id}:v{msg.template_version}",
            locale=msg.locale,
            channel=msg.channel,
            tenant=msg.tenant_slug,
        )
        public_id = format_message_id(msg.id)
        address = msg.address()
        context = RenderContext(
            tenant=msg.tenant_slug,
            message_id=public_id,
            tracking=self.options.tracking,
            base_url=self.options.base_url,
            link_secret=self.options.link_secret,
            recipient=address[1] if address else None,
            category=msg.category,
            unsubscribe_generation=msg.unsubscribe_generation,
        )
        content = self.catalog.render(resolved, msg.variables, msg.channel, context=context)
        to = msg.to
        push = to.get("push") or {}
        metadata = msg.metadata or {}
        return OutboundMessage(
            message_id=public_id,
            tenant=msg.tenant_slug,
            channel=msg.channel,
            to=Address(
                email=to.get("email"),
                phone=to.get("phone"),
                device_token=push.get("token") or to.get("device_token"),
                push_platform=push.get("platform"),
                user_id=to.get("user_id"),
                name=to.get("name"),
            ),
            content=content,
            template_id=f"{msg.template_id}:v{msg.template_version}",
            locale=msg.locale,
            sender=self.options.email_from if msg.channel is Channel.EMAIL else None,
            headers=self._headers(msg),
            extra=_provider_options(msg, resolved.manifest.whatsapp),
            ttl_seconds=_remaining_s(msg, now),
            expires_at=msg.expires_at,
            tags=tuple(metadata.get("tags") or ()),
            category=msg.category or resolved.manifest.category,
            priority=msg.priority.value,
        )

    async def _attach(self, out: OutboundMessage, msg: ClaimedMessage) -> OutboundMessage:
        """Fetch the message's S3 attachments (inline under the size limit, presigned links above).

        Raises:
            DispatchError: too many, missing, not readable, or S3 unavailable (retryable).
        """
        if self.attachments is None:
            raise PermanentError("attachments are not configured on this sender", code="attachments_unavailable")
        return replace(out, attachments=await self.attachments.resolve(msg.attachments))

    def _tenant_driver(self, msg: ClaimedMessage, channel: Channel, provider: str) -> Driver | None:
        sealed = sealed_for(msg.tenant_config, channel, provider)
        if sealed is None or self.tenant_drivers is None:
            return None
        return self.tenant_drivers.driver(msg.tenant_slug, channel, provider, sealed)

    def _headers(self, msg: ClaimedMessage) -> dict[str, str]:
        """RFC 8058 one-click unsubscribe headers for email, when the tenant has unsubscribe on."""
        address = msg.address()
        if msg.channel is not Channel.EMAIL or not address or not msg.tenant_config.unsubscribe:
            return {}
        token = sign_unsubscribe(
            self.options.link_secret,
            msg.tenant_slug,
            address[1],
            category=msg.category,
            generation=msg.unsubscribe_generation,
        )
        return {
            "List-Unsubscribe": f"<{unsubscribe_url(self.options.base_url, token)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }

    def _journey_outcome(self, j: Journey, started: datetime, view: RoutingView | None) -> Outcome:
        """What one routed message's pass ends as: sent, failed, or a retry (pinned after a timeout)."""
        last = j.last
        started = last.started_at if last is not None else started  # attempt rows in the order they were made
        # A provider that never started the message (its batch stopped at an outage first) is no attempt.
        tried = tuple(_tried(t) for t in j.tries[:-1] if t.attempted)
        route = j.plan.summary if view is not None else None
        extra: dict[str, Any] = {"route": route} if route else {}
        if len(j.tries) > 1 or j.skipped:
            extra["tried"] = [t.label for t in j.tries] + [f"{p} (no probe permit)" for p in j.skipped]
        if j.ending is Ending.SENT and last is not None and last.result is not None:
            cost = self.router.cost(j, last.result, view)
            return replace(
                self._result_outcome(j.msg, last.result, started, cost),
                tried=tried,
                meta={**self._sent_meta(last.result), **extra},
            )
        if last is None or last.error is None:
            error: DispatchError = ProviderDownError(
                "no provider could take it now: every candidate's breaker is open", code="circuit_open"
            )
            provider = None
        else:
            error, provider = last.error, last.provider
        outcome = self._failure_outcome(j.msg, error, started, provider=provider)
        attempt_outcome = "unknown" if j.ending is Ending.RETRY_SAME and outcome.status is not Status.DEAD else None
        return replace(outcome, tried=tried, attempt_outcome=attempt_outcome, meta={**outcome.meta, **extra})

    def _no_route(self, msg: ClaimedMessage, now: datetime, plan: RoutePlan) -> Outcome:
        """No provider could ever take this message: ``failed`` at once, with the reason."""
        reasons = {c.provider: c.reason for c in plan.candidates}
        detail = "; ".join(f"{p}: {r}" for p, r in reasons.items()) or f"no {msg.channel.value} provider configured"
        meta = {"reason": "no_route", "error_code": "no_route", "detail": detail[:500], "route": plan.summary}
        return _failed_unsent(msg, now, "no_route", detail, meta, refund_attempts=1, attempted=False)

    @staticmethod
    def _sent_meta(result: SendResult) -> dict[str, Any]:
        return {
            "provider": result.provider,
            "provider_message_id": result.provider_message_id,
            # SMS results say how the text went: encoding and segments (what it is billed by).
            **{k: getattr(result, k) for k in ("encoding", "segments", "country") if hasattr(result, k)},
        }

    @staticmethod
    def _result_outcome(msg: ClaimedMessage, result: SendResult, started: datetime, cost: float | None) -> Outcome:
        return Outcome(
            message_id=msg.id,
            tenant_id=msg.tenant_id,
            status=Status.SENT,
            event=EventType.SENT,
            attempt_no=msg.attempts,
            started_at=started,
            priority=msg.priority,
            provider=result.provider,
            provider_message_id=result.provider_message_id,
            cost_usd=cost,
        )

    def _failure_outcome(
        self, msg: ClaimedMessage, error: DispatchError, started: datetime, *, provider: str | None
    ) -> Outcome:
        decision = self._policy(msg).decide(error, msg.attempts)
        common = {
            "message_id": msg.id,
            "tenant_id": msg.tenant_id,
            "attempt_no": msg.attempts,
            "started_at": started,
            "priority": msg.priority,
            "provider": provider or error.provider,
            "error_class": error.failure_class.value,
            "error_code": error.code,
            "error_detail": (error.detail or type(error).__name__)[:500],
        }
        meta: dict[str, Any] = {
            "error_class": error.failure_class.value,
            "error_code": error.code,
            "provider": provider,
        }
        if isinstance(error, RetryableError) and error.sent_maybe:
            meta["sent_maybe"] = True  # the provider may have it: retried there, not failed over
        if decision.action is Action.RETRY:
            throttled = error.failure_class is FailureClass.THROTTLED
            return Outcome(
                **common,  # type: ignore[arg-type]
                status=Status.THROTTLED if throttled else Status.QUEUED,
                event=EventType.RETRY_SCHEDULED,
                queue=priority_queue(msg.priority),
                # Never later than the TTL: the message then ends ``expired`` on time instead of late.
                available_at=_capped(started + timedelta(seconds=decision.delay_s), msg.expires_at),
                refund_attempts=1 if decision.refund_attempt else 0,
                meta={**meta, "retry_in_s": round(decision.delay_s, 3)},
            )
        if decision.action is Action.DEAD_LETTER:
            return Outcome(
                **common,  # type: ignore[arg-type]
                status=Status.DEAD,
                event=EventType.DEAD_LETTERED,
                queue=dlq_queue(msg.channel),
                meta={**meta, "queue": dlq_queue(msg.channel)},
            )
        return Outcome(
            **common,  # type: ignore[arg-type]
            status=Status.FAILED,
            event=EventType.FAILED,
            meta={**meta, "suppressed": decision.suppress},
            suppress=msg.address() if decision.suppress else None,
        )

    def _policy(self, msg: ClaimedMessage) -> RetryPolicy:
        """The tenant's backoff steps for the channel (``retries``), else the platform's."""
        delays = msg.tenant_config.retries.delays_for(msg.channel)
        if delays is None or delays == self.policy.delays_s:
            return self.policy
        return replace(self.policy, delays_s=delays)

    def _expired(self, msg: ClaimedMessage, now: datetime) -> Outcome:
        expired_at = msg.expires_at.isoformat() if msg.expires_at else None
        return _ended_unsent(msg, now, Status.EXPIRED, EventType.EXPIRED, {"expired_at": expired_at})

    def _suppressed(
        self, msg: ClaimedMessage, now: datetime, reason: str = "recipient is on the tenant's suppression list"
    ) -> Outcome:
        return _ended_unsent(msg, now, Status.SUPPRESSED, EventType.SUPPRESSED, {"reason": reason})

    def _deduplicated(self, msg: ClaimedMessage, now: datetime, first: uuid.UUID) -> Outcome:
        meta = {
            "first_message_id": format_message_id(first),
            "window_seconds": msg.tenant_config.dedupe_window_s(msg.category),
            "category": msg.category,
        }
        outcome = _ended_unsent(msg, now, Status.DEDUPLICATED, EventType.DEDUPLICATED, meta)
        return replace(outcome, deduplicated_of=first)

    def _render_failed(self, msg: ClaimedMessage, now: datetime, err: Exception) -> Outcome:
        meta = {"error_class": "permanent", "error_code": "render_error"}
        return _failed_unsent(msg, now, "render_error", str(err), meta)

    def _count(self, outcomes: Sequence[Outcome], claimed: Sequence[ClaimedMessage]) -> None:
        by_id = {m.id: m for m in claimed}
        now = self.clock()
        for o in outcomes:
            msg = by_id[o.message_id]
            provider = o.provider or "none"
            if o.status is Status.SENT:
                self.metrics.inc(
                    "notifications_sent_total", channel=msg.channel.value, provider=provider, tenant=msg.tenant_slug
                )
                latency_ms = (now - msg.created_at).total_seconds() * 1000
                self.metrics.observe(
                    "delivery_latency_ms", latency_ms, channel=msg.channel.value, priority=msg.priority.value
                )
            elif o.status in (Status.FAILED, Status.DEAD):
                reason = "no_route" if o.error_code == "no_route" else o.error_class or "unknown"
                self.metrics.inc("notifications_failed_total", reason=reason, provider=provider)
                if o.status is Status.DEAD:
                    self.metrics.inc("notifications_dead_lettered_total", channel=msg.channel.value)
            elif o.status is Status.SUPPRESSED:
                self.metrics.inc("notifications_failed_total", reason="suppressed", provider="none")
            elif o.status is Status.EXPIRED:
                self.metrics.inc("notifications_expired_total", channel=msg.channel.value)
            elif o.status is Status.DEDUPLICATED:
                self.metrics.inc("notifications_deduplicated_total", channel=msg.channel.value)
            else:
                self.metrics.inc("notifications_retried_total", reason=o.error_class or "unknown", provider=provider)

    def _count_tries(self, journeys: Sequence[Journey]) -> None:
        for j in journeys:
            channel = j.msg.channel.value
            for t in j.tries:
                if not t.attempted:
                    continue  # the provider never saw it: neither a send nor a failure of its own
                if t.error is None:
                    self.metrics.inc("provider_sent_total", channel=channel, provider=t.provider)
                else:
                    reason = t.error.failure_class.value
                    self.metrics.inc("provider_failed_total", channel=channel, provider=t.provider, reason=reason)


def is_test(msg: ClaimedMessage) -> bool:
    """Whether a test-mode API key sent the message (``metadata.test_mode``, set at admission)."""
    return (msg.metadata or {}).get("test_mode") is True


def _capped(at: datetime, expires_at: datetime | None) -> datetime:
    return at if expires_at is None else min(at, expires_at)


def _tried(t: Try) -> TriedProvider:
    error = t.error
    return TriedProvider(
        provider=t.provider,
        started_at=t.started_at,
        error_class=error.failure_class.value if error else None,
        error_code=error.code if error else None,
        error_detail=(error.detail or type(error).__name__)[:500] if error else None,
    )


def _remaining_s(msg: ClaimedMessage, now: datetime) -> int | None:
    """What is left of the message's TTL, for providers that expire undelivered messages themselves."""
    if msg.expires_at is None:
        return None
    return max(1, int((msg.expires_at - now).total_seconds()))


def _provider_options(msg: ClaimedMessage, whatsapp: WhatsappSpec | None) -> dict[str, Any]:
    """Per-message provider options: push options from ``metadata.push`` (collapse id, push type, sound,
    badge, android/apns/webpush overrides), and a WhatsApp template message when the version declares one."""
    if msg.channel is Channel.PUSH:
        push = (msg.metadata or {}).get("push")
        return {"push": push} if isinstance(push, dict) else {}
    if msg.channel is not Channel.WHATSAPP or whatsapp is None:
        return {}
    return {"whatsapp_template": whatsapp.request(msg.variables, msg.locale)}


def _unsent(
    msg: ClaimedMessage, now: datetime, status: Status, event: EventType, meta: dict[str, Any], **fields: Any
) -> Outcome:
    """An outcome decided before any provider call, with the ``fields`` of its kind."""
    return Outcome(
        message_id=msg.id,
        tenant_id=msg.tenant_id,
        status=status,
        event=event,
        attempt_no=msg.attempts,
        started_at=now,
        priority=msg.priority,
        meta=meta,
        **fields,
    )


def _throttled(msg: ClaimedMessage, now: datetime, delay_s: float, rate: Rate | None) -> Outcome:
    """Over the tenant's send rate: back to the queue for when its token is due, the attempt given back."""
    meta = {
        "reason": "rate_limited",
        "limit": f"limits.{msg.channel.value}.rate_per_second",
        "rate_per_second": rate.per_second if rate else None,
        "retry_in_s": round(delay_s, 3),
    }
    return _unsent(
        msg,
        now,
        Status.THROTTLED,
        EventType.RETRY_SCHEDULED,
        meta,
        error_class=FailureClass.THROTTLED.value,
        error_code="rate_limited",
        queue=priority_queue(msg.priority),
        available_at=_capped(now + timedelta(seconds=delay_s), msg.expires_at),
        refund_attempts=1,
        attempted=False,
    )


def _ended_unsent(
    msg: ClaimedMessage, now: datetime, status: Status, event: EventType, meta: dict[str, Any]
) -> Outcome:
    """A message that ends before any provider call: no attempt row, and the claimed attempt is given back."""
    return _unsent(msg, now, status, event, meta, refund_attempts=1, attempted=False)


def _failed_unsent(
    msg: ClaimedMessage, now: datetime, code: str, detail: str, meta: dict[str, Any], **extra: Any
) -> Outcome:
    """``failed`` before any provider took the message: a permanent failure with its code."""
    return _unsent(
        msg,
        now,
        Status.FAILED,
        EventType.FAILED,
        meta,
        error_class=FailureClass.PERMANENT.value,
        error_code=code,
        error_detail=detail[:500],
        **extra,
    )
