"""Amazon SES events delivered through SNS: verify the SNS message, then read the SES event in it.

SES publishes to an SNS topic (identity notifications: ``notificationType`` Bounce / Complaint /
Delivery; configuration-set event publishing: ``eventType`` Send, Delivery, Bounce, Complaint, Open,
Click, DeliveryDelay, Reject, Rendering Failure, ...) and SNS POSTs it to us, signed (see
:mod:`drivers.email._sns`). One SES event may name several recipients; it becomes one
:class:`DeliveryEvent` per recipient. Events find their message through ``mail.messageId`` (the
``MessageId`` SendEmail returned) and, under event publishing, the ``herald_message_id`` tag the driver
sets.

A route calls ``await SesWebhook(...).receive(body, headers)``: a :class:`SesDelivery` with the events,
or with the ``subscribe_url`` to GET when SNS asks to confirm a subscription.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drivers.email._sns import (
    DEFAULT_CERT_URL_PATTERN,
    DEFAULT_SUBSCRIBE_URL_PATTERN,
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    SnsMessage,
    SnsVerifier,
)
from engine.channels import Channel
from engine.feedback.events import BounceKind, DeliveryEvent, EventType, RejectReason, from_iso

PROVIDER = "ses"
MESSAGE_ID_TAG = "herald_message_id"
CERT_URL_PATTERN_SETTING = "HERALD_SES_SNS_CERT_URL_PATTERN"
SUBSCRIBE_URL_PATTERN_SETTING = "HERALD_SES_SNS_SUBSCRIBE_URL_PATTERN"
TOPIC_ARNS_SETTING = "HERALD_SES_SNS_TOPIC_ARNS"

#: ``eventType`` / ``notificationType`` -> our type.
EVENT_TYPES: dict[str, EventType] = {
    "Send": EventType.QUEUED,
    "Delivery": EventType.DELIVERED,
    "Bounce": EventType.BOUNCED,
    "Complaint": EventType.COMPLAINED,
    "Open": EventType.OPENED,
    "Click": EventType.CLICKED,
    "DeliveryDelay": EventType.DEFERRED,
    "Reject": EventType.DROPPED,
    "Rendering Failure": EventType.FAILED,
}
#: ``bounceType`` -> kind; ``Undetermined`` is soft (the address is not known to be dead).
BOUNCE_KINDS: dict[str, BounceKind] = {"Permanent": BounceKind.HARD, "Transient": BounceKind.SOFT}
BOUNCE_REASONS: dict[str, RejectReason] = {
    "NoEmail": RejectReason.INVALID,
    "Suppressed": RejectReason.BOUNCED,
    "OnAccountSuppressionList": RejectReason.BOUNCED,
    "MailboxFull": RejectReason.UNREACHABLE,
    "MessageTooLarge": RejectReason.CONTENT,
    "ContentRejected": RejectReason.CONTENT,
    "AttachmentRejected": RejectReason.CONTENT,
}
#: Where each event type keeps its own block, its recipients, and their address key.
DETAIL_KEYS: dict[str, tuple[str, str | None]] = {
    "Delivery": ("delivery", "recipients"),
    "Bounce": ("bounce", "bouncedRecipients"),
    "Complaint": ("complaint", "complainedRecipients"),
    "DeliveryDelay": ("deliveryDelay", "delayedRecipients"),
    "Open": ("open", None),
    "Click": ("click", None),
    "Send": ("send", None),
    "Reject": ("reject", None),
    "Rendering Failure": ("failure", None),
}


@dataclass(frozen=True, slots=True)
class SesDelivery:
    """What one SNS request brought: events, or a subscription to confirm by GET on ``subscribe_url``."""

    events: tuple[DeliveryEvent, ...] = ()
    subscribe_url: str | None = None
    sns_message_id: str | None = None


class SesWebhook:
    """Verifier and parser together, configured once."""

    def __init__(self, verifier: SnsVerifier | None = None) -> None:
        self.verifier = verifier or SnsVerifier()

    @classmethod
    def from_env(cls, env: Mapping[str, str], **kw: Any) -> SesWebhook:
        """``HERALD_SES_SNS_CERT_URL_PATTERN`` and ``HERALD_SES_SNS_SUBSCRIBE_URL_PATTERN`` (regexes over the
        whole URL; AWS's by default: an emulator serving its own certificate sets both) and
        ``HERALD_SES_SNS_TOPIC_ARNS`` (comma-separated; any topic when empty)."""
        topics = tuple(t.strip() for t in env.get(TOPIC_ARNS_SETTING, "").split(",") if t.strip())
        return cls(
            SnsVerifier(
                cert_url_pattern=env.get(CERT_URL_PATTERN_SETTING) or DEFAULT_CERT_URL_PATTERN,
                subscribe_url_pattern=env.get(SUBSCRIBE_URL_PATTERN_SETTING) or DEFAULT_SUBSCRIBE_URL_PATTERN,
                topic_arns=topics,
                **kw,
            )
        )

    async def receive(self, body: bytes, headers: Mapping[str, str] | None = None) -> SesDelivery:
        """:meth:`verify`, then :meth:`parse`.

        Raises: the :class:`~drivers.email._sns.SnsVerifier` errors (all ``WebhookError``)."""
        return self.parse(await self.verify(body, headers))

    async def verify(self, body: bytes, headers: Mapping[str, str] | None = None) -> SnsMessage:
        """Raises: the :class:`~drivers.email._sns.SnsVerifier` errors (all ``WebhookError``)."""
        return await self.verifier.verify(body, headers)

    @staticmethod
    def parse(message: SnsMessage) -> SesDelivery:
        """What a verified SNS message brings: the subscription to confirm, or the SES events."""
        if message.type == SUBSCRIPTION_CONFIRMATION:
            return SesDelivery(subscribe_url=message.subscribe_url, sns_message_id=message.message_id)
        return SesDelivery(events=ses_events(message), sns_message_id=message.message_id)


def ses_events(message: SnsMessage) -> tuple[DeliveryEvent, ...]:
    """The SES events in a verified SNS notification; none for confirmations and for SES's plain-text
    "Successfully validated SNS topic" notice."""
    if message.type != NOTIFICATION:
        return ()
    try:
        doc = json.loads(message.message)
    except ValueError:
        return ()
    if not isinstance(doc, dict) or not isinstance(doc.get("mail"), dict):
        return ()
    return to_events(doc, message.timestamp)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _message_id(mail: Mapping[str, Any]) -> str | None:
    tags = mail.get("tags")
    values = tags.get(MESSAGE_ID_TAG) if isinstance(tags, dict) else None
    value = values[0] if isinstance(values, list) and values else None
    return str(value) if isinstance(value, str) and value.startswith("msg_") else None


def _when(detail: Mapping[str, Any], mail: Mapping[str, Any], fallback: datetime) -> datetime:
    for stamp in (detail.get("timestamp"), mail.get("timestamp")):
        if isinstance(stamp, str):
            try:
                return from_iso(stamp)
            except ValueError:
                continue
    return fallback


def _kind(name: str, detail: Mapping[str, Any]) -> tuple[EventType, BounceKind | None, RejectReason | None]:
    kind = EVENT_TYPES.get(name, EventType.UNKNOWN)
    if kind is EventType.BOUNCED:
        bounce = BOUNCE_KINDS.get(str(detail.get("bounceType")), BounceKind.SOFT)
        return kind, bounce, BOUNCE_REASONS.get(str(detail.get("bounceSubType")))
    if kind is EventType.COMPLAINED and detail.get("complaintFeedbackType") == "not-spam":
        return EventType.UNKNOWN, None, None  # the recipient said it is *not* spam
    if kind in (EventType.DROPPED, EventType.FAILED):
        return kind, None, RejectReason.CONTENT
    return kind, None, None


Recipient = tuple[str | None, dict[str, Any]]  #: an address and that recipient's own block


def _recipients(name: str, detail: Mapping[str, Any], mail: Mapping[str, Any]) -> list[Recipient]:
    """(address, that recipient's own block) for each recipient the event is about."""
    _, key = DETAIL_KEYS.get(name, ("", None))
    if key == "recipients":
        return [(str(r), {}) for r in detail.get(key, []) if isinstance(r, str)]
    if key is not None:
        return [(str(r.get("emailAddress")) if r.get("emailAddress") else None, r) for r in _dicts(detail.get(key))]
    destination = [d for d in mail.get("destination", []) if isinstance(d, str)]
    return [(destination[0] if len(destination) == 1 else None, {})]


def _description(name: str, detail: Mapping[str, Any], own: Mapping[str, Any]) -> str | None:
    for text in (
        own.get("diagnosticCode"),
        detail.get("smtpResponse"),
        detail.get("complaintFeedbackType"),
        detail.get("delayType"),
        detail.get("reason"),
        detail.get("errorMessage"),
    ):
        if isinstance(text, str) and text:
            return text
    return None


def to_events(doc: Mapping[str, Any], received_at: datetime) -> tuple[DeliveryEvent, ...]:
    """One SES event document (either dialect), one :class:`DeliveryEvent` per recipient it names."""
    name = str(doc.get("eventType") or doc.get("notificationType") or "")
    mail = doc.get("mail") if isinstance(doc.get("mail"), dict) else {}
    block, _ = DETAIL_KEYS.get(name, ("", None))
    detail = doc.get(block) if isinstance(doc.get(block), dict) else {}
    kind, bounce_kind, reason = _kind(name, detail)
    occurred_at = _when(detail, mail, received_at)
    provider_message_id = str(mail["messageId"]) if mail.get("messageId") else None
    events = []
    for recipient, own in _recipients(name, detail, mail) or [(None, {})]:
        address = recipient.lower() if recipient else None
        events.append(
            DeliveryEvent(
                type=kind,
                provider=PROVIDER,
                channel=Channel.EMAIL,
                occurred_at=occurred_at,
                # Both dialects may publish the same event (on different SNS messages): key on SES's facts.
                dedupe_key=f"{PROVIDER}:{name}:{provider_message_id}:{address or '-'}:{occurred_at.isoformat()}",
                provider_message_id=provider_message_id,
                message_id=_message_id(mail),
                recipient=address,
                bounce_kind=bounce_kind,
                reject_reason=reason,
                error_code=str(own["status"]) if own.get("status") else None,
                description=_description(name, detail, own),
                url=str(detail["link"]) if detail.get("link") else None,
                user_agent=str(detail["userAgent"]) if detail.get("userAgent") else None,
                raw=doc,
            )
        )
    return tuple(events)
