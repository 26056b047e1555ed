"""A signed webhook whose body is of a shape the provider never sends is the sender's error: 400, not 500.

The signature passes, so the parser sees the body; a number where a list goes must not escape it."""

from __future__ import annotations

import asyncio

import pytest

from drivers.email.sendgrid_webhooks import SendgridWebhookVerifier
from drivers.webhooks import MetaReceiver, SendgridReceiver
from drivers.whatsapp.meta_webhooks import MetaWebhookVerifier
from engine.feedback.events import WebhookPayloadError, WebhookRequest
from tests.drivers.test_meta_webhooks import SECRET, signed
from tests.drivers.test_sendgrid_webhooks import Signer

META_SHAPES = [
    b'{"object":"whatsapp_business_account","entry":5}',
    b'{"object":"whatsapp_business_account","entry":[{"changes":5}]}',
    b'{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"statuses":5}}]}]}',
]


@pytest.mark.parametrize("raw", META_SHAPES)
def test_meta(raw: bytes) -> None:
    receiver = MetaReceiver(MetaWebhookVerifier(SECRET))
    request = WebhookRequest(raw, signed(raw), "https://herald.example/webhooks/whatsapp/meta")
    with pytest.raises(WebhookPayloadError) as caught:
        asyncio.run(receiver.receive(request))
    assert caught.value.status_code == 400
    assert "not a meta webhook payload" in str(caught.value)


@pytest.mark.parametrize("raw", [b"[5]", b'[{"event": "delivered", "timestamp": []}]', b'[{"sg_message_id": 5}]'])
def test_sendgrid_parses_or_answers_400(raw: bytes) -> None:
    signer = Signer()
    receiver = SendgridReceiver(SendgridWebhookVerifier(signer.public_key))
    request = WebhookRequest(raw, signer.headers(raw), "https://herald.example/webhooks/email/sendgrid")
    try:
        asyncio.run(receiver.receive(request))
    except WebhookPayloadError as err:
        assert err.status_code == 400
