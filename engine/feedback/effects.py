"""What a delivery event does: to the message's status, and to the recipient's address.

Pure functions over :mod:`engine.states`' transition table, so the rule "a late or out-of-order event
never moves a status backwards" is the table's rule and nothing else's: ``sent`` → ``delivered`` |
``bounced`` | ``failed``, and ``delivered`` → ``bounced`` for an asynchronous hard bounce. Soft bounces,
deferrals, opens, clicks, complaints and unsubscribes are events only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from engine.feedback.events import BounceKind, DeliveryEvent, EventType, RejectReason
from engine.states import Status, can_transition

#: The status each kind of event asks for; an event type missing here never moves a status.
TARGET_STATUS: dict[EventType, Status] = {
    EventType.DELIVERED: Status.DELIVERED,
    EventType.READ: Status.DELIVERED,  # WhatsApp may report read without delivered first
    EventType.FAILED: Status.FAILED,
    EventType.DROPPED: Status.FAILED,  # the provider never sent it
}


def target_status(event: DeliveryEvent) -> Status | None:
    """The status ``event`` asks for, or ``None`` for an event that never moves one."""
    if event.type is EventType.BOUNCED:
        return Status.BOUNCED if event.bounce_kind is BounceKind.HARD else None
    return TARGET_STATUS.get(event.type)


@dataclass(frozen=True, slots=True)
class Applied:
    """The result of applying events to a status."""

    before: Status
    after: Status
    refused: tuple[DeliveryEvent, ...] = ()  #: events that asked for a move the table does not allow

    @property
    def moved(self) -> bool:
        return self.after is not self.before


def apply_event(current: Status, event: DeliveryEvent) -> Applied:
    """Apply one event to a message in status ``current``.

    An event that asks for the status the message already has (a duplicate) is not refused; one that
    asks for a move the table forbids (``delivered`` after ``failed``, ``failed`` after ``delivered``)
    is, and the status stays.
    """
    target = target_status(event)
    if target is None or target is current:
        return Applied(current, current)
    if can_transition(current, target):
        return Applied(current, target)
    return Applied(current, current, (event,))


def apply_events(current: Status, events: Iterable[DeliveryEvent]) -> Applied:
    """Apply a message's events in the order they happened (a batch may hold several for one message)."""
    status, refused = current, []
    for event in sorted(events, key=lambda e: e.occurred_at):
        step = apply_event(status, event)
        status = step.after
        refused += step.refused
    return Applied(current, status, tuple(refused))


class SuppressionScope(StrEnum):
    """How much of a tenant's traffic to an address an event stops."""

    ALL = "all"  #: every category, required ones included: the address does not work or asked for nothing
    CATEGORY = "category"  #: the category the message was sent in (an unsubscribe)


#: Reject reasons that say the address itself is dead or refuses everything from us.
SUPPRESS_ALL_REASONS: frozenset[RejectReason] = frozenset(
    {
        RejectReason.INVALID,
        RejectReason.BOUNCED,
        RejectReason.COMPLAINED,
        RejectReason.UNREGISTERED,
        RejectReason.OPTED_OUT,
    }
)


def suppression_for(event: DeliveryEvent) -> SuppressionScope | None:
    """Whether ``event`` puts its recipient on the tenant's suppression list, and for what.

    A hard bounce, a complaint, an invalid number or address and an unregistered push token suppress the
    address for every category; an unsubscribe suppresses the category it was sent in.
    """
    if event.type is EventType.BOUNCED:
        return SuppressionScope.ALL if event.bounce_kind is BounceKind.HARD else None
    if event.type is EventType.COMPLAINED:
        return SuppressionScope.ALL
    if event.type is EventType.UNSUBSCRIBED:
        return SuppressionScope.CATEGORY
    if event.reject_reason in SUPPRESS_ALL_REASONS:
        return SuppressionScope.ALL
    if event.reject_reason is RejectReason.UNSUBSCRIBED:
        return SuppressionScope.CATEGORY
    return None
