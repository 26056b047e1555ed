"""What a batch of provider events does, decided in memory before one statement writes it.

:func:`plan_batch` takes the events and what storage knows of the messages they name, and decides for
each event: the event row (type and meta), whether it is an orphan, the suppression it adds, the
engagement it counts; and for each message the status it moves to, through
:func:`engine.feedback.effects.apply_event` (so never backwards).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from engine.channels import Channel
from engine.feedback.agents import AgentVerdict, classify_agent
from engine.feedback.effects import SuppressionScope, apply_event, suppression_for, target_status
from engine.feedback.events import BounceKind, DeliveryEvent, RejectReason
from engine.feedback.events import EventType as Kind
from engine.ids import new_id, parse_message_id
from engine.redaction import redact
from engine.states import PENDING, EventType, Status

#: The event row each kind of provider event is recorded as.
EVENT_NAMES: dict[Kind, EventType] = {
    Kind.QUEUED: EventType.PROCESSED,
    Kind.SENT: EventType.FORWARDED,
    Kind.DELIVERED: EventType.DELIVERED,
    Kind.BOUNCED: EventType.BOUNCED,
    Kind.COMPLAINED: EventType.COMPLAINED,
    Kind.OPENED: EventType.OPENED,
    Kind.CLICKED: EventType.CLICKED,
    Kind.DEFERRED: EventType.DEFERRED,
    Kind.DROPPED: EventType.DROPPED,
    Kind.FAILED: EventType.FAILED,
    Kind.READ: EventType.READ,
    Kind.UNSUBSCRIBED: EventType.UNSUBSCRIBED,
    Kind.UNKNOWN: EventType.PROVIDER_EVENT,
}

#: Statuses reached by a provider event that the rollups count.
COUNTED_STATUSES: tuple[Status, ...] = (Status.DELIVERED, Status.BOUNCED, Status.FAILED)

#: Statuses in which a message has not reached its provider yet: a status-moving event for one is early.
NOT_YET_SENT: frozenset[Status] = PENDING | {Status.SENDING}

_DESCRIPTION_CHARS = 500


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What storage knows of a message an event names."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_slug: str
    status: Status
    version: int
    channel: Channel
    to: Mapping[str, Any]
    category: str | None
    template_id: str
    template_version: int
    provider: str
    created_at: datetime

    @property
    def day(self) -> date:
        return self.created_at.astimezone(UTC).date()

    def address(self, event: DeliveryEvent) -> tuple[str, str] | None:
        """The (kind, address) the event is about, for the suppression list: the message's own
        recipient on its channel, else what the event names."""
        if self.channel is Channel.PUSH:
            push = self.to.get("push") or {}
            token = push.get("token") or self.to.get("device_token")
            return ("device_token", str(token)) if token else None
        if self.channel in (Channel.SMS, Channel.WHATSAPP):
            phone = self.to.get("phone") or event.recipient
            return ("phone", str(phone).removeprefix("whatsapp:")) if phone else None
        email = self.to.get("email") or event.recipient
        return ("email", str(email).lower()) if email else None


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    id: uuid.UUID
    event: DeliveryEvent
    name: EventType
    meta: dict[str, Any]
    message: MessageRef | None = None  #: ``None``: kept as an orphan
    orphan_reason: str | None = None  #: ``unknown`` (no such message) or ``early`` (still being sent)
    suppress: tuple[str, str, str | None] | None = None  #: (kind, address, category or None for every one)
    engagement: str | None = None  #: ``open`` or ``click``
    agent: AgentVerdict | None = None
    moves: bool = False  #: its message changes status in this batch

    @property
    def soft_bounce(self) -> bool:
        return self.event.type is Kind.BOUNCED and self.event.bounce_kind is BounceKind.SOFT

    @property
    def human(self) -> bool:
        return self.agent is not None and not self.agent.machine


@dataclass(frozen=True, slots=True)
class PlannedMove:
    message: MessageRef
    status: Status
    reached: frozenset[Status]  #: every status it passes through in this batch (a delivered-then-bounced pair)


@dataclass(slots=True)
class Plan:
    events: list[PlannedEvent] = field(default_factory=list)
    moves: list[PlannedMove] = field(default_factory=list)
    refused: int = 0  #: events that asked for a move the state machine does not allow

    @property
    def orphans(self) -> list[PlannedEvent]:
        return [e for e in self.events if e.message is None]


def lookup_key(event: DeliveryEvent) -> tuple[str | None, uuid.UUID | None]:
    """How storage finds the event's message: Herald's own id where the provider echoed it, else the
    provider's message id."""
    mid = parse_message_id(event.message_id) if event.message_id else None
    if mid is not None:
        return (None, mid)
    return (event.provider_message_id, None)


def unique_events(events: Iterable[DeliveryEvent]) -> list[DeliveryEvent]:
    """The events with in-batch duplicates (same dedupe key) dropped, order kept."""
    seen: dict[str, DeliveryEvent] = {}
    for event in events:
        seen.setdefault(event.dedupe_key, event)
    return list(seen.values())


def event_meta(event: DeliveryEvent, agent: AgentVerdict | None) -> dict[str, Any]:
    """What the event row shows of a provider event (no recipient address; descriptions masked)."""
    meta: dict[str, Any] = {"provider": event.provider, "source": "provider"}
    if event.provider_message_id:
        meta["provider_message_id"] = event.provider_message_id
    for key in ("bounce_kind", "reject_reason", "error_code", "url"):
        value = getattr(event, key)
        if value is not None:
            meta[key] = str(value)
    if event.description:
        meta["description"] = redact(event.description)[:_DESCRIPTION_CHARS]
    if agent is not None:
        meta["agent"] = agent.agent.value
        meta["machine"] = agent.machine
    if event.type is Kind.UNKNOWN:
        meta["provider_event"] = str(event.raw.get("event") or event.raw.get("eventType") or "")[:64]
    return meta


def _suppression(event: DeliveryEvent, ref: MessageRef) -> tuple[str, str, str | None] | None:
    scope = suppression_for(event)
    if scope is None:
        return None
    address = ref.address(event)
    if address is None:
        return None
    category = ref.category if scope is SuppressionScope.CATEGORY else None
    return (address[0], address[1], category)


def _engagement(event: DeliveryEvent) -> tuple[str | None, AgentVerdict | None]:
    if event.type is Kind.OPENED:
        return "open", classify_agent(event.user_agent, event.ip, machine_hint=event.machine)
    if event.type is Kind.CLICKED:
        return "click", classify_agent(event.user_agent, event.ip, machine_hint=event.machine)
    return None, None


def _orphan(event: DeliveryEvent, reason: str) -> PlannedEvent:
    return PlannedEvent(
        new_id(), event, EVENT_NAMES[event.type], event_meta(event, None), message=None, orphan_reason=reason
    )


def _plan_message(ref: MessageRef, events: Sequence[DeliveryEvent], plan: Plan) -> None:
    status, reached = ref.status, set()
    planned: list[PlannedEvent] = []
    for event in sorted(events, key=lambda e: e.occurred_at):
        if ref.status in NOT_YET_SENT and target_status(event) is not None:
            plan.events.append(_orphan(event, "early"))  # matched again once the send is recorded
            continue
        kind, agent = _engagement(event)
        meta = event_meta(event, agent)
        step = apply_event(status, event)
        plan.refused += len(step.refused)
        if step.moved:
            meta["status"] = step.after.value
            reached.add(step.after)
            status = step.after
        planned.append(
            PlannedEvent(
                new_id(),
                event,
                EVENT_NAMES[event.type],
                meta,
                message=ref,
                suppress=_suppression(event, ref),
                engagement=kind,
                agent=agent,
            )
        )
    moves = status is not ref.status
    if moves:
        plan.moves.append(PlannedMove(ref, status, frozenset(reached)))
    plan.events.extend(replace(p, moves=moves) for p in planned)


def plan_batch(
    events: Sequence[DeliveryEvent], found: Mapping[tuple[str | None, uuid.UUID | None], MessageRef]
) -> Plan:
    """Decide what ``events`` do, given the messages storage ``found`` for their :func:`lookup_key`."""
    plan = Plan()
    by_message: dict[uuid.UUID, list[DeliveryEvent]] = defaultdict(list)
    refs: dict[uuid.UUID, MessageRef] = {}
    for event in unique_events(events):
        ref = found.get(lookup_key(event))
        if ref is None and event.provider_message_id and event.message_id:
            ref = found.get((event.provider_message_id, None))
        if ref is None:
            plan.events.append(_orphan(event, "unknown"))
            continue
        refs[ref.id] = ref
        by_message[ref.id].append(event)
    for message_id, grouped in by_message.items():
        _plan_message(refs[message_id], grouped, plan)
    return plan


def event_doc(event: DeliveryEvent) -> str:
    """The normalized event as JSON (for an orphan row), without its raw payload."""
    doc = {
        name: getattr(event, name)
        for name in DeliveryEvent.__slots__
        if name != "raw" and getattr(event, name) is not None
    }
    doc["occurred_at"] = event.occurred_at.isoformat()
    return json.dumps(doc, default=str)


def event_from_doc(doc: Mapping[str, Any], raw: Mapping[str, Any]) -> DeliveryEvent:
    """An orphan row's event back as a :class:`DeliveryEvent`.

    Raises:
        ValueError: the document is not one :func:`event_doc` wrote.
    """
    fields = dict(doc)
    try:
        fields["type"] = Kind(fields["type"])
        fields["channel"] = Channel(fields["channel"])
        fields["occurred_at"] = datetime.fromisoformat(fields["occurred_at"])
        if "bounce_kind" in fields:
            fields["bounce_kind"] = BounceKind(fields["bounce_kind"])
        if "reject_reason" in fields:
            fields["reject_reason"] = RejectReason(fields["reject_reason"])
        return DeliveryEvent(**fields, raw=raw)
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a stored event: {err}") from None
