"""SendGrid's signed Event Webhook: verify the request, then turn its batch into delivery events.

SendGrid POSTs a JSON array of events (batched, up to a few thousand) with an ECDSA P-256 / SHA-256
signature over ``timestamp header + raw body``: headers ``X-Twilio-Email-Event-Webhook-Signature``
(base64 DER signature) and ``X-Twilio-Email-Event-Webhook-Timestamp`` (unix seconds). The verification key
is the base64 DER public key SendGrid's settings page shows (``HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY``).
SendGrid defines no freshness window; we refuse a timestamp more than ``tolerance_s`` (5 min) away from
our clock, as a replay.

Events carry ``sg_event_id`` (the dedupe key), ``sg_message_id`` (``X-Message-Id`` of the send plus a
``.filter…`` suffix) and our ``custom_args`` flattened to the top level (``message_id``).

A route calls :meth:`SendgridWebhookVerifier.verify` then :func:`parse_events`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.feedback.events import (
    BounceKind,
    DeliveryEvent,
    EventType,
    RejectReason,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
    content_key,
    from_unix,
    get_header,
    json_body,
)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
PUBLIC_KEY_SETTING = "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY"
#: How far the signed timestamp may be from our clock before the request counts as a replay.
DEFAULT_TOLERANCE_S = 300.0

#: SendGrid ``event`` -> our type. Anything else is :attr:`EventType.UNKNOWN`.
EVENT_TYPES: dict[str, EventType] = {
    "processed": EventType.QUEUED,
    "deferred": EventType.DEFERRED,
    "delivered": EventType.DELIVERED,
    "bounce": EventType.BOUNCED,
    "dropped": EventType.DROPPED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
}

#: ``type`` of a ``bounce`` event: ``bounce`` is the receiving server's permanent refusal, ``blocked`` a
#: temporary one (reputation, rate) after which the address may work again.
BOUNCE_KINDS: dict[str, BounceKind] = {"bounce": BounceKind.HARD, "blocked": BounceKind.SOFT}

#: ``reason`` of a ``dropped`` event (lower-cased) -> why, for the address.
DROP_REASONS: dict[str, RejectReason] = {
    "bounced address": RejectReason.BOUNCED,
    "spam reporting address": RejectReason.COMPLAINED,
    "unsubscribed address": RejectReason.UNSUBSCRIBED,
    "invalid": RejectReason.INVALID,
    "spam content": RejectReason.CONTENT,
    "invalid smtpapi header": RejectReason.OTHER,
}

#: ``bounce_classification`` -> why.
BOUNCE_REASONS: dict[str, RejectReason] = {
    "invalid address": RejectReason.INVALID,
    "reputation": RejectReason.BLOCKED,
    "frequency or volume": RejectReason.BLOCKED,
    "content": RejectReason.CONTENT,
    "mailbox unavailable": RejectReason.UNREACHABLE,
    "technical": RejectReason.OTHER,
    "unclassified": RejectReason.OTHER,
}


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's base64 DER text (a PEM block is accepted too).

    Raises:
        ConfigurationError: not a P-256 public key; names the setting.
    """
    try:
        stripped = text.strip()
        key = (
            load_pem_public_key(stripped.encode())
            if stripped.startswith("-----BEGIN")
            else load_der_public_key(base64.b64decode(stripped, validate=True))
        )
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise ConfigurationError(f"{PUBLIC_KEY_SETTING} is not the base64 public key SendGrid shows") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError(f"{PUBLIC_KEY_SETTING} must be an ECDSA P-256 public key")
    return key


class SendgridWebhookVerifier:
    """Checks the signature and freshness of one Event Webhook request.

    Raises:
        ConfigurationError: at construction, for a key that is not SendGrid's.
    """

    def __init__(
        self,
        public_key: str,
        *,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = load_public_key(public_key)
        self.tolerance_s = tolerance_s
        self.clock = clock

    @classmethod
    def from_env(cls, env: Mapping[str, str], **kw: Any) -> SendgridWebhookVerifier:
        """Raises: ConfigurationError: the key is missing or malformed."""
        key = env.get(PUBLIC_KEY_SETTING)
        if not key:
            raise ConfigurationError(f"set {PUBLIC_KEY_SETTING} to verify SendGrid's event webhook")
        return cls(key, **kw)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raises:
        WebhookAuthError: a signature header is missing (401) or the signature does not match (403).
        WebhookReplayError: correctly signed, but the timestamp is outside the tolerance window.
        """
        signature = get_header(headers, SIGNATURE_HEADER)
        stamp = get_header(headers, TIMESTAMP_HEADER)
        if not signature or not stamp:
            raise WebhookAuthError(f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required", status_code=401)
        try:
            der = base64.b64decode(signature, validate=True)
            self._key.verify(der, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookAuthError("the SendGrid signature does not match") from None
        try:
            signed_at = float(stamp)
        except ValueError:
            raise WebhookAuthError(f"{TIMESTAMP_HEADER} is not unix seconds") from None
        if abs(self.clock() - signed_at) > self.tolerance_s:
            raise WebhookReplayError("the SendGrid timestamp is outside the tolerance window")


def parse_events(body: bytes, *, received_at: datetime | None = None) -> tuple[DeliveryEvent, ...]:
    """Every event of a (verified) batch, in the order SendGrid sent them.

    Raises:
        WebhookPayloadError: the body is not a JSON array of objects.
    """
    doc = json_body(body)
    if not isinstance(doc, list) or not all(isinstance(item, dict) for item in doc):
        raise WebhookPayloadError("the body must be a JSON array of event objects")
    fallback = received_at or datetime.now(UTC)
    return tuple(to_event(item, fallback) for item in doc)


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return str(value) if value not in (None, "") else None


def _occurred_at(raw: Mapping[str, Any], fallback: datetime) -> datetime:
    try:
        return from_unix(raw["timestamp"])
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return fallback


def to_event(raw: Mapping[str, Any], received_at: datetime) -> DeliveryEvent:
    """One SendGrid event as a :class:`DeliveryEvent`."""
    kind = EVENT_TYPES.get(str(raw.get("event", "")), EventType.UNKNOWN)
    bounce_kind = reason = None
    if kind is EventType.BOUNCED:
        bounce_kind = BOUNCE_KINDS.get(str(raw.get("type", "bounce")), BounceKind.HARD)
        reason = BOUNCE_REASONS.get(str(raw.get("bounce_classification", "")).lower())
    elif kind is EventType.DROPPED:
        reason = DROP_REASONS.get(str(raw.get("reason", "")).lower(), RejectReason.OTHER)
    sg_message_id = _text(raw, "sg_message_id")
    message_id = _text(raw, "message_id")
    email = _text(raw, "email")
    event_id = _text(raw, "sg_event_id")
    return DeliveryEvent(
        type=kind,
        provider=PROVIDER,
        channel=Channel.EMAIL,
        occurred_at=_occurred_at(raw, received_at),
        dedupe_key=f"{PROVIDER}:{event_id}" if event_id else content_key(PROVIDER, raw),
        provider_message_id=sg_message_id.split(".", 1)[0] if sg_message_id else None,
        message_id=message_id if message_id and message_id.startswith("msg_") else None,
        recipient=email.lower() if email else None,
        bounce_kind=bounce_kind,
        reject_reason=reason,
        error_code=_text(raw, "status"),
        description=_text(raw, "reason") or _text(raw, "response"),
        url=_text(raw, "url"),
        user_agent=_text(raw, "useragent"),
        raw=raw,
    )
