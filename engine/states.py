"""The message state machine, as data.

Statuses only move forward by rank, so a late ``sent`` never overwrites ``delivered``. A transition the
table does not allow is refused by :func:`can_transition`; storage applies the same rule in SQL.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    THROTTLED = "throttled"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"
    DEAD = "dead"
    CANCELLED = "cancelled"
    DEDUPLICATED = "deduplicated"


#: Statuses a message can still leave by being sent.
PENDING: frozenset[Status] = frozenset({Status.SCHEDULED, Status.QUEUED, Status.THROTTLED})

#: Statuses in which the message is done: nothing sends it again. Only a late hard bounce
#: (``delivered -> bounced``) and a DLQ replay (``dead -> queued``, or ``expired`` past its TTL) leave one.
TERMINAL: frozenset[Status] = frozenset(
    {
        Status.DELIVERED,
        Status.BOUNCED,
        Status.FAILED,
        Status.SUPPRESSED,
        Status.EXPIRED,
        Status.DEAD,
        Status.CANCELLED,
        Status.DEDUPLICATED,
    }
)

#: Allowed moves. ``sending -> queued`` is a retry (or a lease returned on shutdown);
#: ``dead -> queued`` is a DLQ replay, and ``dead -> expired`` a replay of one whose TTL has passed;
#: ``delivered -> bounced`` is an asynchronous hard bounce, reported after the receiving server had accepted
#: the message. ``cancelled`` is reachable only before sending starts, ``deduplicated`` before or at the claim.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.SCHEDULED: frozenset({Status.QUEUED, Status.SENDING, Status.CANCELLED, Status.EXPIRED, Status.DEDUPLICATED}),
    Status.QUEUED: frozenset(
        {
            Status.SENDING,
            Status.CANCELLED,
            Status.EXPIRED,
            Status.SUPPRESSED,
            Status.THROTTLED,
            Status.DEDUPLICATED,
        }
    ),
    Status.THROTTLED: frozenset({Status.QUEUED, Status.SENDING, Status.CANCELLED, Status.EXPIRED, Status.DEDUPLICATED}),
    Status.SENDING: frozenset(
        {
            Status.SENT,
            Status.QUEUED,
            Status.THROTTLED,
            Status.FAILED,
            Status.DEAD,
            Status.EXPIRED,
            Status.SUPPRESSED,
            Status.DELIVERED,
            Status.BOUNCED,
            Status.DEDUPLICATED,
        }
    ),
    Status.SENT: frozenset({Status.DELIVERED, Status.BOUNCED, Status.FAILED}),
    Status.DEAD: frozenset({Status.QUEUED, Status.EXPIRED}),
    Status.DELIVERED: frozenset({Status.BOUNCED}),
    Status.BOUNCED: frozenset(),
    Status.FAILED: frozenset(),
    Status.SUPPRESSED: frozenset(),
    Status.EXPIRED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.DEDUPLICATED: frozenset(),
}


def can_transition(current: Status, new: Status) -> bool:
    return new in TRANSITIONS[current]


class EventType(StrEnum):
    """Events recorded on a message (``notification_events.type``)."""

    ACCEPTED = "NotificationAccepted"
    SCHEDULED = "NotificationScheduled"
    SENDING = "NotificationSending"
    SENT = "NotificationSent"
    RETRY_SCHEDULED = "NotificationRetryScheduled"
    FAILED = "NotificationFailed"
    DEAD_LETTERED = "NotificationDeadLettered"
    EXPIRED = "NotificationExpired"
    SUPPRESSED = "NotificationSuppressed"
    UNSUBSCRIBED = "RecipientUnsubscribed"
    DELIVERED = "NotificationDelivered"
    BOUNCED = "NotificationBounced"
    OPENED = "NotificationOpened"
    CLICKED = "NotificationClicked"
    # What providers report after the send (see engine.feedback.ingest.EVENT_NAMES).
    PROCESSED = "NotificationProcessed"  #: the provider accepted it for sending
    FORWARDED = "NotificationForwarded"  #: handed on to the carrier or to WhatsApp
    DEFERRED = "NotificationDeferred"
    DROPPED = "NotificationDropped"
    COMPLAINED = "NotificationComplained"
    READ = "NotificationRead"
    PROVIDER_EVENT = "NotificationProviderEvent"  #: a provider event of a kind we do not know
    CANCELLED = "NotificationCancelled"
    RESCHEDULED = "NotificationRescheduled"
    REPLAYED = "NotificationReplayed"
    DEDUPLICATED = "NotificationDeduplicated"
