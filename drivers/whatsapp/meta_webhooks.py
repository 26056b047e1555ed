"""Meta WhatsApp Cloud API webhooks: the GET verification handshake, the POST signature, the statuses.

- Handshake: Meta calls ``GET ?hub.mode=subscribe&hub.verify_token=<ours>&hub.challenge=<n>`` once when
  the webhook is set up; we answer 200 with the challenge as the body when mode and token match.
- Every POST carries ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``, compared
  in constant time on the raw bytes. The scheme has no timestamp; Meta retries for days and may deliver
  twice, and the dedupe key (wamid + status) makes a replay harmless.
- ``entry[].changes[].value.statuses[]`` (``sent``, ``delivered``, ``read``, ``failed`` with ``errors``)
  become events; incoming messages in the same payload are not delivery feedback and are skipped. A
  status echoes the ``biz_opaque_callback_data`` the send carried (Herald's ``msg_…``).

A route calls :meth:`MetaWebhookVerifier.handshake` for the GET, and :meth:`MetaWebhookVerifier.verify`
then :func:`parse` (statuses and replies, in one walk of the payload) for a POST.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.feedback.events import (
    DeliveryEvent,
    EventType,
    InboundMessage,
    RejectReason,
    WebhookAuthError,
    WebhookPayloadError,
    from_unix,
    get_header,
    json_body,
)

PROVIDER = "meta"
SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
APP_SECRET_SETTING = "HERALD_META_APP_SECRET"
VERIFY_TOKEN_SETTING = "HERALD_META_VERIFY_TOKEN"

#: ``statuses[].status`` -> our type (``played`` is a voice message listened to).
STATUS_TYPES: dict[str, EventType] = {
    "sent": EventType.SENT,
    "delivered": EventType.DELIVERED,
    "read": EventType.READ,
    "played": EventType.READ,
    "failed": EventType.FAILED,
}

#: ``errors[].code`` of a failed status -> why. Nothing here suppresses the number for every category:
#: "undeliverable" on WhatsApp (131026) says nothing about SMS to the same number; 131050 (the user
#: stopped marketing messages) is an unsubscribe from that category.
ERROR_REASONS: dict[int, RejectReason] = {
    131050: RejectReason.UNSUBSCRIBED,
    131049: RejectReason.BLOCKED,  # Meta chose not to deliver (per-user marketing limit)
    131048: RejectReason.BLOCKED,  # spam rate limit
    368: RejectReason.BLOCKED,  # integrity: account restricted
    131031: RejectReason.BLOCKED,  # integrity: account locked
    131051: RejectReason.CONTENT,  # unsupported message type
    131052: RejectReason.CONTENT,  # media download error
    131053: RejectReason.CONTENT,  # media upload error
    132000: RejectReason.CONTENT,  # template parameter count mismatch
    132001: RejectReason.CONTENT,  # template does not exist
    131026: RejectReason.UNREACHABLE,  # undeliverable (not on WhatsApp, old app, terms not accepted)
}


class MetaWebhookVerifier:
    """The app secret (signatures) and verify token (handshake) of one Meta app.

    Raises:
        ConfigurationError: at construction, without an app secret.
    """

    def __init__(self, app_secret: str, verify_token: str | None = None) -> None:
        if not app_secret:
            raise ConfigurationError(f"set {APP_SECRET_SETTING} to verify Meta's webhooks")
        self._secret = app_secret.encode()
        self._verify_token = verify_token

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetaWebhookVerifier:
        return cls(env.get(APP_SECRET_SETTING, ""), env.get(VERIFY_TOKEN_SETTING) or None)

    def handshake(self, query: Mapping[str, str]) -> str:
        """The ``hub.challenge`` to answer with (200, ``text/plain``).

        Raises:
            WebhookAuthError: wrong mode or token, or no verify token configured (403).
        """
        token = query.get("hub.verify_token") or ""
        challenge = query.get("hub.challenge")
        if not self._verify_token:
            raise WebhookAuthError(f"set {VERIFY_TOKEN_SETTING} to answer Meta's verification request")
        if query.get("hub.mode") != "subscribe" or not challenge:
            raise WebhookAuthError("not a subscription verification request")
        if not hmac.compare_digest(token.encode(), self._verify_token.encode()):
            raise WebhookAuthError("the verify token does not match")
        return challenge

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raises: WebhookAuthError: the header is missing (401) or the signature does not match (403)."""
        offered = get_header(headers, SIGNATURE_HEADER)
        if not offered:
            raise WebhookAuthError(f"{SIGNATURE_HEADER} is required", status_code=401)
        expected = SIGNATURE_PREFIX + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), offered.strip().lower().encode()):
            raise WebhookAuthError("the Meta signature does not match")


def _values(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Each ``entry[].changes[].value`` of a payload, where its ``statuses[]`` and ``messages[]`` are."""
    for entry in doc.get("entry") or []:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if isinstance(value, dict):
                yield value


def _items(value: Mapping[str, Any], key: str) -> Iterator[dict[str, Any]]:
    return (item for item in value.get(key) or [] if isinstance(item, dict))


def _first_error(status: Mapping[str, Any]) -> Mapping[str, Any]:
    errors = status.get("errors")
    return errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}


def to_event(status: Mapping[str, Any], received_at: datetime) -> DeliveryEvent:
    """One ``statuses[]`` element as a :class:`DeliveryEvent`."""
    name = str(status.get("status", ""))
    kind = STATUS_TYPES.get(name, EventType.UNKNOWN)
    error = _first_error(status)
    code = error.get("code")
    reason = None
    if kind is EventType.FAILED:
        reason = ERROR_REASONS.get(code, RejectReason.OTHER) if isinstance(code, int) else RejectReason.OTHER
    try:
        occurred_at = from_unix(status["timestamp"])
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        occurred_at = received_at
    wamid = str(status["id"]) if status.get("id") else None
    recipient = str(status.get("recipient_id") or "")
    echoed = status.get("biz_opaque_callback_data")
    return DeliveryEvent(
        type=kind,
        provider=PROVIDER,
        channel=Channel.WHATSAPP,
        occurred_at=occurred_at,
        dedupe_key=f"{PROVIDER}:{wamid}:{name}",
        provider_message_id=wamid,
        message_id=echoed if isinstance(echoed, str) and echoed.startswith("msg_") else None,
        recipient=("+" + recipient.lstrip("+")) if recipient else None,
        reject_reason=reason,
        error_code=str(code) if code is not None else None,
        description=str(error.get("title") or error.get("message")) if error else None,
        raw=status,
    )


def _text(message: Mapping[str, Any]) -> str | None:
    """What the recipient wrote: a text body, or the label of a quick-reply button they tapped."""
    for kind, key in (("text", "body"), ("button", "text")):
        part = message.get(kind)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            return str(part[key])
    return None


def _inbound(message: Mapping[str, Any]) -> InboundMessage:
    sender = "+" + str(message["from"]).lstrip("+")
    return InboundMessage(Channel.WHATSAPP, PROVIDER, sender, _text(message), str(message.get("id") or "") or None)


def parse(
    body: bytes, *, received_at: datetime | None = None
) -> tuple[tuple[DeliveryEvent, ...], tuple[InboundMessage, ...]]:
    """The statuses (as events) and the messages recipients sent, of a (verified) webhook POST, in one
    walk of its ``entry[].changes[].value``; a payload without either gives none of it.

    Raises:
        WebhookPayloadError: the body is not a JSON object.
    """
    doc = json_body(body)
    if not isinstance(doc, dict):
        raise WebhookPayloadError("the body must be a JSON object")
    fallback = received_at or datetime.now(UTC)
    events: list[DeliveryEvent] = []
    inbound: list[InboundMessage] = []
    for value in _values(doc):
        events += (to_event(s, fallback) for s in _items(value, "statuses") if s.get("id"))
        inbound += (_inbound(m) for m in _items(value, "messages") if m.get("from"))
    return tuple(events), tuple(inbound)


def parse_statuses(body: bytes, *, received_at: datetime | None = None) -> tuple[DeliveryEvent, ...]:
    """Every status in a (verified) webhook POST; a payload without statuses gives none.

    Raises:
        WebhookPayloadError: the body is not a JSON object.
    """
    return parse(body, received_at=received_at)[0]


def parse_inbound(body: bytes) -> tuple[InboundMessage, ...]:
    """The messages recipients sent (``entry[].changes[].value.messages[]``) in a verified webhook POST.

    Raises:
        WebhookPayloadError: the body is not a JSON object.
    """
    return parse(body)[1]
