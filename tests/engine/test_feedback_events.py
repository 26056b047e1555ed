"""The delivery event model and what an event does to a message's status and to its address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.channels import Channel
from engine.feedback.effects import (
    SuppressionScope,
    apply_event,
    apply_events,
    suppression_for,
    target_status,
)
from engine.feedback.events import BounceKind, DeliveryEvent, EventType, RejectReason, content_key, from_iso
from engine.states import Status

T0 = datetime(2024, 5, 2, 10, 0, tzinfo=UTC)


def event(
    kind: EventType,
    *,
    at: datetime = T0,
    bounce: BounceKind | None = None,
    reason: RejectReason | None = None,
) -> DeliveryEvent:
    return DeliveryEvent(
        type=kind,
        provider="test",
        channel=Channel.EMAIL,
        occurred_at=at,
        dedupe_key=f"test:{kind}:{at.isoformat()}",
        bounce_kind=bounce,
        reject_reason=reason,
    )


HARD = event(EventType.BOUNCED, bounce=BounceKind.HARD)
SOFT = event(EventType.BOUNCED, bounce=BounceKind.SOFT)


class TestDeliveryEvent:
    def test_occurred_at_is_kept_in_utc(self) -> None:
        paris = datetime(2024, 5, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        assert event(EventType.DELIVERED, at=paris).occurred_at == T0
        assert event(EventType.DELIVERED, at=paris).occurred_at.tzinfo is UTC

    def test_a_naive_time_is_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            event(EventType.DELIVERED, at=datetime(2024, 5, 2, 10, 0))

    def test_frozen_and_raw_never_compared(self) -> None:
        one = DeliveryEvent(EventType.OPENED, "p", Channel.EMAIL, T0, "k", raw={"a": 1})
        two = DeliveryEvent(EventType.OPENED, "p", Channel.EMAIL, T0, "k", raw={"a": 2})
        assert one == two
        with pytest.raises(AttributeError):
            one.type = EventType.CLICKED  # type: ignore[misc]

    def test_content_key_is_stable_and_order_free(self) -> None:
        assert content_key("x", {"a": 1, "b": [2]}) == content_key("x", {"b": [2], "a": 1})
        assert content_key("x", {"a": 1}) != content_key("x", {"a": 2})
        assert content_key("x", {"a": 1}).startswith("x:")

    def test_iso_times_need_a_zone(self) -> None:
        assert from_iso("2016-01-27T14:59:38.237Z") == datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC)
        with pytest.raises(ValueError):
            from_iso("2016-01-27T14:59:38")


class TestStatus:
    @pytest.mark.parametrize(
        ("current", "incoming", "after"),
        [
            (Status.SENT, event(EventType.DELIVERED), Status.DELIVERED),
            (Status.SENT, HARD, Status.BOUNCED),
            (Status.SENT, event(EventType.FAILED), Status.FAILED),
            (Status.SENT, event(EventType.DROPPED, reason=RejectReason.BOUNCED), Status.FAILED),
            (Status.SENT, event(EventType.READ), Status.DELIVERED),  # WhatsApp may skip delivered
            (Status.DELIVERED, HARD, Status.BOUNCED),  # an asynchronous bounce
            (Status.SENDING, event(EventType.DELIVERED), Status.DELIVERED),  # webhook beat the sender's record
        ],
    )
    def test_moves(self, current: Status, incoming: DeliveryEvent, after: Status) -> None:
        applied = apply_event(current, incoming)
        assert applied.after is after
        assert applied.moved
        assert applied.refused == ()

    @pytest.mark.parametrize(
        "incoming",
        [
            SOFT,
            event(EventType.DEFERRED),
            event(EventType.OPENED),
            event(EventType.CLICKED),
            event(EventType.COMPLAINED),
            event(EventType.UNSUBSCRIBED),
            event(EventType.QUEUED),
            event(EventType.SENT),
            event(EventType.UNKNOWN),
        ],
    )
    @pytest.mark.parametrize("current", [Status.SENT, Status.DELIVERED])
    def test_events_only(self, current: Status, incoming: DeliveryEvent) -> None:
        assert target_status(incoming) is None
        applied = apply_event(current, incoming)
        assert (applied.after, applied.moved, applied.refused) == (current, False, ())

    @pytest.mark.parametrize(
        ("current", "incoming"),
        [
            (Status.DELIVERED, event(EventType.FAILED)),  # late failure after delivery
            (Status.FAILED, event(EventType.DELIVERED)),
            (Status.BOUNCED, event(EventType.DELIVERED)),
            (Status.FAILED, HARD),
            (Status.QUEUED, event(EventType.DELIVERED)),  # not sent (again) yet: the table has no such move
            (Status.SUPPRESSED, event(EventType.DELIVERED)),
        ],
    )
    def test_refused_never_moves_backwards(self, current: Status, incoming: DeliveryEvent) -> None:
        applied = apply_event(current, incoming)
        assert applied.after is current
        assert applied.refused == (incoming,)

    def test_a_duplicate_is_neither_a_move_nor_refused(self) -> None:
        applied = apply_event(Status.DELIVERED, event(EventType.DELIVERED))
        assert (applied.moved, applied.refused) == (False, ())

    def test_a_batch_applies_in_the_order_things_happened(self) -> None:
        delivered = event(EventType.DELIVERED, at=T0)
        bounced = event(EventType.BOUNCED, at=T0 + timedelta(minutes=5), bounce=BounceKind.HARD)
        opened = event(EventType.OPENED, at=T0 + timedelta(minutes=1))
        applied = apply_events(Status.SENT, [bounced, opened, delivered])
        assert applied.after is Status.BOUNCED
        assert applied.refused == ()

    def test_out_of_order_arrival_keeps_the_furthest_status(self) -> None:
        # failed is reported first (it happened later), a stale delivered arrives afterwards
        first = apply_events(Status.SENT, [event(EventType.FAILED, at=T0 + timedelta(seconds=30))])
        late = apply_events(first.after, [event(EventType.DELIVERED, at=T0)])
        assert first.after is late.after is Status.FAILED
        assert len(late.refused) == 1


class TestSuppression:
    @pytest.mark.parametrize(
        ("incoming", "scope"),
        [
            (HARD, SuppressionScope.ALL),
            (SOFT, None),
            (event(EventType.COMPLAINED), SuppressionScope.ALL),
            (event(EventType.UNSUBSCRIBED), SuppressionScope.CATEGORY),
            (event(EventType.FAILED, reason=RejectReason.INVALID), SuppressionScope.ALL),  # invalid number
            (event(EventType.FAILED, reason=RejectReason.UNREGISTERED), SuppressionScope.ALL),  # push token
            (event(EventType.FAILED, reason=RejectReason.OPTED_OUT), SuppressionScope.ALL),  # STOP
            (event(EventType.DROPPED, reason=RejectReason.BOUNCED), SuppressionScope.ALL),
            (event(EventType.DROPPED, reason=RejectReason.COMPLAINED), SuppressionScope.ALL),
            (event(EventType.DROPPED, reason=RejectReason.UNSUBSCRIBED), SuppressionScope.CATEGORY),
            (event(EventType.FAILED, reason=RejectReason.UNREACHABLE), None),
            (event(EventType.FAILED, reason=RejectReason.CONTENT), None),
            (event(EventType.FAILED, reason=RejectReason.BLOCKED), None),
            (event(EventType.DELIVERED), None),
            (event(EventType.OPENED), None),
            (event(EventType.DEFERRED), None),
        ],
    )
    def test_which_events_suppress(self, incoming: DeliveryEvent, scope: SuppressionScope | None) -> None:
        assert suppression_for(incoming) is scope
