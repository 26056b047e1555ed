"""Recipients' replies as the providers post them: Twilio's incoming-message form and the ``messages`` of
Meta's webhook, parsed once their signature is verified."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from drivers.fakes.twilio import twilio_signature
from drivers.sms.twilio_webhooks import parse_inbound as twilio_inbound
from drivers.webhooks import create_receiver
from drivers.whatsapp.meta_webhooks import parse_inbound as meta_inbound
from engine.channels import Channel
from engine.feedback.events import InboundMessage, WebhookAuthError, WebhookPayloadError, WebhookRequest

URL = "https://herald.example.com/webhooks/sms/twilio/inbound"
TOKEN = "twilio-auth-token"


def form(**params: str) -> bytes:
    return urlencode(params).encode()


def test_a_twilio_sms_reply() -> None:
    body = form(From="+447400123456", To="+15005550006", Body="STOP", MessageSid="SM1")
    assert twilio_inbound(body) == (InboundMessage(Channel.SMS, "twilio", "+447400123456", "STOP", "SM1"),)


def test_a_twilio_whatsapp_reply_is_whatsapp_by_its_sender() -> None:
    (msg,) = twilio_inbound(form(From="whatsapp:+447400123456", Body="start", MessageSid="SM2"))
    assert msg.channel is Channel.WHATSAPP and msg.sender == "+447400123456"


def test_a_twilio_reply_names_its_sender() -> None:
    with pytest.raises(WebhookPayloadError):
        twilio_inbound(form(Body="STOP"))


async def test_the_twilio_receiver_verifies_before_it_parses() -> None:
    receiver = create_receiver(Channel.SMS, "twilio", {"HERALD_TWILIO_AUTH_TOKEN": TOKEN})
    params = {"From": "+447400123456", "Body": "HELP", "MessageSid": "SM3"}
    good = WebhookRequest(form(**params), {"X-Twilio-Signature": twilio_signature(TOKEN, URL, params)}, URL)
    assert [m.text for m in (await receiver.inbound(good)).inbound] == ["HELP"]
    forged = WebhookRequest(form(**params), {"X-Twilio-Signature": twilio_signature("other", URL, params)}, URL)
    with pytest.raises(WebhookAuthError):
        await receiver.inbound(forged)


def test_metas_messages_beside_its_statuses() -> None:
    value = {
        "messages": [
            {"from": "447400123456", "id": "wamid.1", "type": "text", "text": {"body": "Stop"}},
            {"from": "447400123457", "id": "wamid.2", "type": "button", "button": {"text": "Unsubscribe"}},
            {"from": "447400123458", "id": "wamid.3", "type": "image", "image": {"id": "1"}},
        ],
        "statuses": [{"id": "wamid.0", "status": "read", "recipient_id": "447400123456"}],
    }
    body = json.dumps({"entry": [{"changes": [{"value": value}]}]}).encode()
    assert [(m.sender, m.text) for m in meta_inbound(body)] == [
        ("+447400123456", "Stop"),
        ("+447400123457", "Unsubscribe"),
        ("+447400123458", None),
    ]
    assert meta_inbound(b'{"entry": []}') == ()
    with pytest.raises(WebhookPayloadError):
        meta_inbound(b"[1]")
