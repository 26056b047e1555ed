"""The ingress queue (``notifications.ingress``, RabbitMQ only): services enqueue notifications directly.

A message's body is one notification as JSON, the body of ``POST /api/notifications`` with its
``idempotency_key``. Its tenant is named in the ``x-herald-tenant`` header and vouched for by
``x-herald-signature: v1=<hex HMAC-SHA256 of "<tenant>." + body>`` under the tenant's ingress key
(``GET /api/ingress/key``; after a rotation the previous key still verifies for a day).

The consumer takes what arrived in groups, and each tenant's group goes through the batch intake: the
same checks and idempotency as the API, stored in a handful of statements. A message that cannot be
accepted (no or bad signature, unknown tenant, not JSON, a field at fault, its key reused with another
body) is published to ``notifications.ingress.dead`` with its errors, then acknowledged; each is counted
in ``ingress_dead_lettered_total{reason}``. A replay of a key already used with the same body is
acknowledged quietly, as the API answers it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from engine.auth import Principal
from engine.channels import Channel
from engine.credentials import CredentialBox
from engine.errors import ConfigurationError
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import FieldError
from engine.rotating_secrets import ROTATION_OVERLAP_S, RotatingSecret, RotatingSecrets, utcnow
from engine.runtime import Components, RuntimeConfig
from engine.storage.batch_store import BatchStore
from engine.storage.rotating_secrets import INGRESS_KEYS, RotatingSecretStore

from .parse import Unreadable
from .service import BatchIntake

log = logging.getLogger(__name__)

INGRESS_QUEUE = "notifications.ingress"
DEAD_QUEUE = "notifications.ingress.dead"
TENANT_HEADER = "x-herald-tenant"
SIGNATURE_HEADER = "x-herald-signature"
SIGNATURE_VERSION = "v1"
KEY_PREFIX = "hik_"
#: How long the consumer trusts its copy of a tenant's keys (a rotation shows up within it).
KEYS_TTL_S = 5.0
_FIELD = "ingress_key"


def sign(key: str, tenant: str, body: bytes) -> str:
    """The ``x-herald-signature`` value of ``body`` sent for ``tenant`` under ``key``."""
    digest = hmac.new(key.encode(), tenant.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


@dataclass(frozen=True, slots=True)
class TenantIngressKeys(RotatingSecret):
    def verifies(self, tenant: str, body: bytes, signature: str, now: datetime) -> bool:
        return any(hmac.compare_digest(sign(k, tenant, body), signature) for k in self.active(now))

    def view(self, now: datetime) -> dict[str, object]:
        """What ``GET /api/ingress/key`` shows: the current key and until when the previous one verifies."""
        return {
            "key": self.current,
            "previous_expires_at": self.previous_expires_at(now),
            "rotated_at": self.rotated_at,
        }


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class IngressKeys(RotatingSecrets[TenantIngressKeys]):
    """Reads, creates and rotates tenants' ingress keys (sealed like provider credentials)."""

    def __init__(
        self,
        store: RotatingSecretStore,
        box: CredentialBox,
        *,
        overlap_s: float = ROTATION_OVERLAP_S,
        clock: Callable[[], datetime] = utcnow,
        ttl_s: float = KEYS_TTL_S,
    ) -> None:
        super().__init__(
            store, box, kind=TenantIngressKeys, field=_FIELD, make=_new_key, overlap_s=overlap_s, clock=clock
        )
        self.ttl_s = ttl_s
        self._cached: dict[uuid.UUID, tuple[float, TenantIngressKeys]] = {}

    async def cached(self, tenant_id: uuid.UUID) -> TenantIngressKeys:
        now = time.monotonic()
        hit = self._cached.get(tenant_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        keys = await self.get(tenant_id)
        self._cached[tenant_id] = (now, keys)
        return keys

    async def rotate(self, tenant_id: uuid.UUID, *, actor: str) -> TenantIngressKeys:
        """A new key; the one it replaces still verifies for the overlap (audit-logged)."""
        keys = await super().rotate(tenant_id, actor=actor)
        self._cached.pop(tenant_id, None)
        return keys


@dataclass(frozen=True, slots=True)
class IngressMessage:
    body: bytes
    headers: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IngressOutcome:
    """``reason`` None: accepted (or replayed); else why it goes to the dead-letter queue, with errors."""

    reason: str | None = None
    errors: tuple[FieldError, ...] = ()
    replayed: bool = False
    message_id: str | None = None


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def _dead(reason: str, msg: str, loc: tuple[str | int, ...] = ("headers",)) -> IngressOutcome:
    return IngressOutcome(reason, (FieldError(loc, msg),))


class IngressProcessor:
    """Verifies, checks and stores a group of ingress messages (no broker here: the consumer's job)."""

    def __init__(self, batches: BatchIntake, keys: IngressKeys, metrics: MetricsBuffer) -> None:
        self.batches = batches
        self.keys = keys
        self.metrics = metrics

    async def process(self, messages: Sequence[IngressMessage]) -> list[IngressOutcome]:
        outcomes: list[IngressOutcome | None] = [None] * len(messages)
        by_tenant: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        now = self.keys.clock()
        for i, message in enumerate(messages):
            verdict = await self._verify(message, now)
            if isinstance(verdict, IngressOutcome):
                outcomes[i] = verdict
            else:
                by_tenant[verdict[0]].append((i, verdict[1]))
        for slug, entries in by_tenant.items():
            result = await self.batches.submit(Principal(slug, frozenset({"send"})), [doc for _, doc in entries])
            for (i, _), item in zip(entries, result.items, strict=True):
                if item.code == 202:
                    outcomes[i] = IngressOutcome(replayed=item.replayed, message_id=item.message_id)
                else:
                    reason = "key_reused" if item.code == 422 and _is_key_error(item.errors) else "invalid"
                    # located from the message body's root, as the API locates a single request's fields
                    errors = tuple(FieldError(("body", *e.loc[2:]), e.msg, e.type) for e in item.errors)
                    outcomes[i] = IngressOutcome(reason, errors)
        final = [o if o is not None else _dead("internal", "not processed") for o in outcomes]
        for o in final:
            self.metrics.inc("ingress_messages_total", outcome="dead_lettered" if o.reason else "accepted")
            if o.reason:
                self.metrics.inc("ingress_dead_lettered_total", reason=o.reason)
        return final

    async def _verify(self, message: IngressMessage, now: datetime) -> IngressOutcome | tuple[str, Any]:
        slug = _header(message.headers, TENANT_HEADER)
        signature = _header(message.headers, SIGNATURE_HEADER)
        if slug is None:
            return _dead("no_tenant", f"the {TENANT_HEADER} header is missing", ("headers", TENANT_HEADER))
        if signature is None:
            return _dead("bad_signature", f"the {SIGNATURE_HEADER} header is missing", ("headers", SIGNATURE_HEADER))
        tenant = await self.batches.intake.tenant(slug)
        if tenant is None:
            return _dead("unknown_tenant", f"no tenant {slug!r}", ("headers", TENANT_HEADER))
        keys = await self.keys.cached(tenant.id)
        if not keys.verifies(slug, message.body, signature, now):
            return _dead(
                "bad_signature",
                "the signature does not match the body under the tenant's ingress key",
                ("headers", SIGNATURE_HEADER),
            )
        try:
            doc = json.loads(message.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return IngressOutcome("not_json", (FieldError(("body",), "the body is not valid JSON", "json_invalid"),))
        if isinstance(doc, list):
            return IngressOutcome("invalid", (FieldError(("body",), "one notification per message", "dict_type"),))
        return slug, doc if isinstance(doc, dict) else Unreadable((FieldError(("body",), "expected an object"),))


def _is_key_error(errors: Sequence[FieldError]) -> bool:
    return any(e.loc[-1:] == ("idempotency_key",) and "different request" in e.msg for e in errors)


def dead_letter_body(message: IngressMessage, outcome: IngressOutcome) -> bytes:
    """What the dead-letter queue holds for a refused message: why, the errors, and the message itself."""
    try:
        original: dict[str, str] = {"text": message.body.decode("utf-8")}
    except UnicodeDecodeError:
        original = {"base64": base64.b64encode(message.body).decode()}
    doc = {
        "reason": outcome.reason,
        "errors": [e.as_dict() for e in outcome.errors],
        "tenant": _header(message.headers, TENANT_HEADER),
        "body": original,
    }
    return json.dumps(doc).encode()


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    queue: str = INGRESS_QUEUE
    dead_queue: str = DEAD_QUEUE
    prefetch: int = 2000
    group_max: int = 1000
    group_wait_s: float = 0.02


class IngressConsumer:
    """Consumes the ingress queue in groups; publishes refused messages (with confirms) before acking."""

    def __init__(self, amqp_url: str, processor: IngressProcessor, options: ConsumerOptions | None = None) -> None:
        self.amqp_url = amqp_url
        self.processor = processor
        self.options = options or ConsumerOptions()
        self.running = False
        self.processed = 0
        self.dead_lettered = 0
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def run(self, stop: asyncio.Event) -> None:
        connection = await aio_pika.connect_robust(self.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.options.prefetch)
            queue = await channel.declare_queue(self.options.queue, durable=True)
            await channel.declare_queue(self.options.dead_queue, durable=True)
            tag = await queue.consume(self._inbox.put)
            self.running = True
            try:
                while not stop.is_set():
                    group = await self._group(stop)
                    if group:
                        await self._handle(channel, group)
            finally:
                self.running = False
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
        finally:
            await connection.close()

    async def _group(self, stop: asyncio.Event) -> list[AbstractIncomingMessage]:
        try:
            first = await asyncio.wait_for(self._inbox.get(), 0.5)
        except TimeoutError:
            return []
        group = [first]
        deadline = time.monotonic() + self.options.group_wait_s
        while len(group) < self.options.group_max and not stop.is_set():
            while not self._inbox.empty() and len(group) < self.options.group_max:
                group.append(self._inbox.get_nowait())
            left = deadline - time.monotonic()
            if left <= 0 or len(group) >= self.options.group_max:
                break
            await asyncio.sleep(min(left, 0.005))
        return group

    async def _handle(self, channel: aio_pika.abc.AbstractChannel, group: list[AbstractIncomingMessage]) -> None:
        messages = [IngressMessage(m.body, dict(m.headers or {})) for m in group]
        try:
            outcomes = await self.processor.process(messages)
        except Exception:
            log.exception("ingress group of %d failed; returned to the queue", len(group))
            for m in group:
                await m.nack(requeue=True)
            await asyncio.sleep(1.0)
            return
        dead = [(m, o) for m, o in zip(messages, outcomes, strict=True) if o.reason]
        if dead:
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            dead_letter_body(m, o),
                            content_type="application/json",
                            headers={"x-herald-reason": o.reason or "", TENANT_HEADER: m.headers.get(TENANT_HEADER)},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=self.options.dead_queue,
                    )
                    for m, o in dead
                )
            )
        for m in group:
            await m.ack()
        self.processed += len(group)
        self.dead_lettered += len(dead)


def open_ingress(parts: Components, config: RuntimeConfig, metrics: MetricsBuffer) -> IngressConsumer:
    """The consumer of ``<HERALD_QUEUE_PREFIX>notifications.ingress`` over a replica's components, with
    the same checks as the API's intake. Raises: ConfigurationError without ``AMQP_URL`` (RabbitMQ only)."""
    s = config.settings
    if not s.amqp_url:
        raise ConfigurationError("the ingress queue needs RabbitMQ: set AMQP_URL")
    intake = Intake(
        parts.repo,
        parts.catalog,
        metrics=metrics,
        idempotency_ttl_s=s.idempotency_ttl_s,
        channels=frozenset(c for c in Channel if s.providers(c)),
        tenant_templates=parts.tenant_templates,
        allow_private_callbacks=s.webhooks_allow_private,
    )
    keys = IngressKeys(RotatingSecretStore(parts.pool, INGRESS_KEYS), CredentialBox(s.credentials_key or config.secret))
    processor = IngressProcessor(BatchIntake(intake, BatchStore(parts.pool)), keys, metrics)
    options = ConsumerOptions(queue=s.queue_prefix + INGRESS_QUEUE, dead_queue=s.queue_prefix + DEAD_QUEUE)
    return IngressConsumer(s.amqp_url, processor, options)
