"""Twilio status callbacks (SMS; WhatsApp reuses this): verify ``X-Twilio-Signature``, then map the status.

Twilio signs each callback with HMAC-SHA1 under the account's auth token over the full URL it called
(scheme, host, path, query) followed by every form parameter, names sorted, each name's values sorted,
as ``name + value``; the header is that digest in base64. Validators try the URL with and without an
explicit default port, because Twilio's side is inconsistent about it. The scheme carries no timestamp:
a replayed callback is harmless because its dedupe key (message sid + status) is the same.

The URL must be the one Twilio was given (``HERALD_PUBLIC_URL`` + path + query), not what a proxy in
front of us rewrote it to. When that URL carries ``herald_message_id=msg_…`` (it is signed with the rest),
events name Herald's message directly.

A route calls :meth:`TwilioWebhookVerifier.verify` then :func:`parse_status_callback`, or for the
incoming-message webhook (a reply: ``From``, ``Body``), :func:`parse_inbound`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.feedback.events import (
    DeliveryEvent,
    EventType,
    InboundMessage,
    RejectReason,
    WebhookAuthError,
    WebhookPayloadError,
    get_header,
)

PROVIDER = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
AUTH_TOKEN_SETTING = "HERALD_TWILIO_AUTH_TOKEN"
#: Query parameter of the status callback URL naming Herald's message (covered by the signature).
MESSAGE_ID_QUERY = "herald_message_id"
WHATSAPP_PREFIX = "whatsapp:"

#: ``MessageStatus`` -> our type. Twilio sends no callback for the initial status, but may for later
#: ``queued``/``sending`` steps.
STATUS_TYPES: dict[str, EventType] = {
    "accepted": EventType.QUEUED,
    "scheduled": EventType.QUEUED,
    "queued": EventType.QUEUED,
    "sending": EventType.QUEUED,
    "sent": EventType.SENT,
    "delivered": EventType.DELIVERED,
    "undelivered": EventType.FAILED,
    "failed": EventType.FAILED,
    "read": EventType.READ,
    "canceled": EventType.DROPPED,
}

#: ``ErrorCode`` -> why, for the recipient's number. Only INVALID and OPTED_OUT suppress the number:
#: 30003 (handset unreachable) is temporary and 30004/30007 (blocked, filtered) may be about the content.
ERROR_REASONS: dict[int, RejectReason] = {
    21211: RejectReason.INVALID,  # invalid To number
    21612: RejectReason.INVALID,  # To unroutable
    21614: RejectReason.INVALID,  # To not SMS-capable (landline)
    30005: RejectReason.INVALID,  # unknown destination handset
    30006: RejectReason.INVALID,  # landline or unreachable carrier
    21610: RejectReason.OPTED_OUT,  # the recipient replied STOP
    30003: RejectReason.UNREACHABLE,  # handset off or out of coverage
    30004: RejectReason.BLOCKED,  # message blocked
    30007: RejectReason.CONTENT,  # carrier violation / filtered
    30034: RejectReason.BLOCKED,  # US A2P 10DLC: unregistered sending number
    63016: RejectReason.OTHER,  # WhatsApp: freeform outside the 24 h window
}


def form_params(body: bytes) -> list[tuple[str, str]]:
    """The ``application/x-www-form-urlencoded`` body as (name, value) pairs, blanks kept.

    Raises:
        WebhookPayloadError: not UTF-8 form data.
    """
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise WebhookPayloadError("the body is not form data") from None


def _url_variants(url: str) -> tuple[str, str]:
    """The URL without and with an explicit default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    without = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    return without, with_port


def signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a form POST to ``url``."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()).decode()


class TwilioWebhookVerifier:
    """Checks ``X-Twilio-Signature`` with one account's auth token.

    Raises:
        ConfigurationError: at construction, without a token.
    """

    def __init__(self, auth_token: str) -> None:
        if not auth_token:
            raise ConfigurationError(f"set {AUTH_TOKEN_SETTING} to verify Twilio's status callbacks")
        self._token = auth_token

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TwilioWebhookVerifier:
        return cls(env.get(AUTH_TOKEN_SETTING, ""))

    def verify(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        """``url`` is the full URL Twilio called, query included.

        Raises:
            WebhookAuthError: the header is missing (401) or matches neither form of the URL (403).
            WebhookPayloadError: the body is not form data.
        """
        offered = get_header(headers, SIGNATURE_HEADER)
        if not offered:
            raise WebhookAuthError(f"{SIGNATURE_HEADER} is required", status_code=401)
        params = form_params(body)
        matches = [
            hmac.compare_digest(signature(self._token, variant, params).encode(), offered.strip().encode())
            for variant in _url_variants(url)
        ]
        if not any(matches):
            raise WebhookAuthError("the Twilio signature does not match")


def _error_code(params: Mapping[str, str]) -> int | None:
    raw = params.get("ErrorCode", "")
    return int(raw) if raw.isdigit() else None


def _message_id(url: str | None) -> str | None:
    if not url:
        return None
    found = parse_qs(urlsplit(url).query).get(MESSAGE_ID_QUERY, [])
    return found[0] if found and found[0].startswith("msg_") else None


def parse_status_callback(
    body: bytes,
    *,
    url: str | None = None,
    channel: Channel = Channel.SMS,
    received_at: datetime | None = None,
) -> tuple[DeliveryEvent, ...]:
    """The (verified) callback as one event; Twilio's callbacks carry no time of their own, so the event
    happened when it arrived.

    Raises:
        WebhookPayloadError: not form data, or without ``MessageSid``.
    """
    params: dict[str, Any] = dict(form_params(body))
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        raise WebhookPayloadError("a Twilio status callback names MessageSid")
    status = str(params.get("MessageStatus") or params.get("SmsStatus") or "")
    kind = STATUS_TYPES.get(status, EventType.UNKNOWN)
    code = _error_code(params)
    reason = None
    if kind in (EventType.FAILED, EventType.DROPPED):
        reason = ERROR_REASONS.get(code, RejectReason.OTHER) if code is not None else RejectReason.OTHER
    to = str(params.get("To") or "").removeprefix(WHATSAPP_PREFIX) or None
    event = DeliveryEvent(
        type=kind,
        provider=PROVIDER,
        channel=channel,
        occurred_at=received_at or datetime.now(UTC),
        dedupe_key=f"{PROVIDER}:{sid}:{status}",
        provider_message_id=str(sid),
        message_id=_message_id(url),
        recipient=to,
        reject_reason=reason,
        error_code=str(code) if code is not None else None,
        raw=params,
    )
    return (event,)


def parse_inbound(body: bytes, *, channel: Channel = Channel.SMS) -> tuple[InboundMessage, ...]:
    """A (verified) incoming-message webhook as the message the recipient sent.

    Raises:
        WebhookPayloadError: not form data, or without ``From``.
    """
    params = dict(form_params(body))
    sender = str(params.get("From") or "").removeprefix(WHATSAPP_PREFIX)
    if not sender:
        raise WebhookPayloadError("an incoming Twilio message names From")
    if params.get("From", "").startswith(WHATSAPP_PREFIX):
        channel = Channel.WHATSAPP
    sid = params.get("MessageSid") or params.get("SmsSid")
    return (InboundMessage(channel, PROVIDER, sender, params.get("Body"), str(sid) if sid else None),)
