"""Twilio WhatsApp status callbacks: the SMS callback scheme (:mod:`drivers.sms.twilio_webhooks`) with
``whatsapp:`` addresses and the ``read`` status.

A route calls :meth:`TwilioWebhookVerifier.verify` then :func:`parse_status_callback`.
"""

from __future__ import annotations

from datetime import datetime

from drivers.sms.twilio_webhooks import TwilioWebhookVerifier
from drivers.sms.twilio_webhooks import parse_status_callback as _parse
from engine.channels import Channel
from engine.feedback.events import DeliveryEvent

__all__ = ["TwilioWebhookVerifier", "parse_status_callback"]


def parse_status_callback(
    body: bytes, *, url: str | None = None, received_at: datetime | None = None
) -> tuple[DeliveryEvent, ...]:
    """Raises: WebhookPayloadError: not a Twilio status callback."""
    return _parse(body, url=url, channel=Channel.WHATSAPP, received_at=received_at)
