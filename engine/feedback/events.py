"""The normalized delivery event, and the errors a webhook verifier or parser raises.

Every provider's parser (``drivers/<channel>/<provider>_webhooks.py``) turns one webhook request into a
tuple of :class:`DeliveryEvent`. Anything a parser does not recognise becomes :attr:`EventType.UNKNOWN`
rather than an error, so a provider adding an event type never makes us answer 4xx (which it would not
retry) or 5xx (which it would retry for a day).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from engine.channels import Channel


class EventType(StrEnum):
    """What happened, in one vocabulary for every provider."""

    QUEUED = "queued"  #: the provider accepted it for sending (SendGrid processed, SES Send, Twilio queued)
    SENT = "sent"  #: handed on to the carrier or WhatsApp (Twilio sent, Meta sent)
    DELIVERED = "delivered"
    BOUNCED = "bounced"  #: see :attr:`DeliveryEvent.bounce_kind`
    COMPLAINED = "complained"  #: the recipient reported it as spam
    OPENED = "opened"
    CLICKED = "clicked"
    DEFERRED = "deferred"  #: delayed; the provider keeps trying
    DROPPED = "dropped"  #: the provider refused to send it at all (see :attr:`DeliveryEvent.reject_reason`)
    FAILED = "failed"
    READ = "read"
    UNSUBSCRIBED = "unsubscribed"
    UNKNOWN = "unknown"


class BounceKind(StrEnum):
    HARD = "hard"  #: permanent: the address does not work
    SOFT = "soft"  #: transient (mailbox full, blocked for now, undetermined)


class RejectReason(StrEnum):
    """Why a provider dropped or failed a message, as far as the recipient's address is concerned."""

    INVALID = "invalid"  #: the address or number does not exist or cannot receive this channel
    BOUNCED = "bounced"  #: the address bounced before (on the provider's own suppression list)
    COMPLAINED = "complained"  #: the address reported spam before
    UNREGISTERED = "unregistered"  #: the push token is no longer registered
    OPTED_OUT = "opted_out"  #: the recipient replied STOP: the carrier blocks every message from us
    UNSUBSCRIBED = "unsubscribed"  #: the recipient unsubscribed from this kind of message
    BLOCKED = "blocked"  #: a receiving server or carrier blocked it (reputation, policy)
    CONTENT = "content"  #: the content was rejected (virus, filter, template problem)
    UNREACHABLE = "unreachable"  #: temporarily unreachable (handset off, mailbox server down)
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """One thing a provider told us about one message and one recipient.

    ``provider_message_id`` is the id the send returned (SendGrid's ``X-Message-Id``, SES ``MessageId``,
    Twilio ``SM…``, Meta ``wamid.…``); ``message_id`` is Herald's ``msg_…`` when the provider echoes our
    custom arguments. ``dedupe_key`` is the same for the same provider event delivered twice and starts
    with the provider's name. ``raw`` is the provider's payload for this event, kept for a while beside
    the normalized fields and never compared.
    """

    type: EventType
    provider: str
    channel: Channel
    occurred_at: datetime  #: aware, UTC
    dedupe_key: str
    provider_message_id: str | None = None
    message_id: str | None = None
    recipient: str | None = None  #: the address this event is about (email, E.164 phone)
    bounce_kind: BounceKind | None = None
    reject_reason: RejectReason | None = None
    error_code: str | None = None  #: the provider's code (``5.1.1``, ``30003``, ``131047``)
    description: str | None = None  #: the provider's explanation (SMTP response, error title)
    url: str | None = None  #: the link of a click
    user_agent: str | None = None  #: of an open or click
    ip: str | None = None  #: the address an open or click came from, where the provider reports it
    #: the provider's own verdict that an open was a machine's (SendGrid ``sg_machine_open``), if it gives one
    machine: bool | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise ValueError("occurred_at must be timezone-aware")
        if self.occurred_at.utcoffset():
            object.__setattr__(self, "occurred_at", self.occurred_at.astimezone(UTC))


def from_unix(seconds: float | int | str) -> datetime:
    """A provider's unix timestamp (a number, or digits as text) as an aware UTC datetime.

    Raises:
        ValueError: not a number.
    """
    return datetime.fromtimestamp(float(seconds), tz=UTC)


def from_iso(text: str) -> datetime:
    """An ISO 8601 timestamp (``2016-01-27T14:59:38.237Z``) as an aware UTC datetime.

    Raises:
        ValueError: not ISO 8601, or without a timezone.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone")
    return parsed.astimezone(UTC)


class WebhookError(Exception):
    """A webhook request we refuse; ``status_code`` is what the route answers (a 4xx the provider will
    not retry for a forgery, a 5xx where our side failed and a retry may succeed)."""

    status_code: int = 400

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class WebhookPayloadError(WebhookError):
    """The body is not what the provider sends (not JSON, not a form, wrong shape): 400."""

    status_code = 400


class WebhookAuthError(WebhookError):
    """The request is not proven to come from the provider: a bad signature (403) or none (401).
    Nothing in it may be recorded."""

    status_code = 403


class WebhookReplayError(WebhookAuthError):
    """Correctly signed, but its timestamp is outside the tolerance window: refused as a replay."""


class WebhookUpstreamError(WebhookError):
    """Verification needed something we could not fetch (an SNS signing certificate): 502, so the
    provider retries."""

    status_code = 502


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One provider webhook request as a receiver sees it: the raw bytes, before anything is parsed.

    ``url`` is the URL the provider was given and called (``HERALD_PUBLIC_URL`` + path + query), not what
    a proxy in front of Herald rewrote it to: Twilio signs it.
    """

    body: bytes
    headers: Mapping[str, str]
    url: str
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a recipient sent us (a reply on SMS or WhatsApp), from a verified webhook."""

    channel: Channel
    provider: str
    sender: str  #: the recipient's number, E.164
    text: str | None
    provider_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookReceipt:
    """What a verified request brought: events to record, messages recipients sent (replies), or an SNS
    subscription to confirm (GET ``confirm_url``)."""

    events: tuple[DeliveryEvent, ...] = ()
    confirm_url: str | None = None
    inbound: tuple[InboundMessage, ...] = ()


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name, whatever the case of the mapping's keys (Starlette's headers are
    case-insensitive already; a plain dict may not be)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def json_body(body: bytes) -> Any:
    """A (verified) webhook body read as JSON; the caller checks its shape.

    Raises:
        WebhookPayloadError: the body is not JSON.
    """
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookPayloadError("the body is not JSON") from None


def content_key(provider: str, raw: Mapping[str, Any] | Sequence[Any]) -> str:
    """A dedupe key from the event's content, for providers whose events carry no id of their own."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return f"{provider}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"
