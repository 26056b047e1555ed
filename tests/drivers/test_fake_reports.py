"""The emulators report deliveries the way their providers do: each real driver sends to its emulator, the
emulator calls a local receiver back, and what arrives passes the providers' own SDK verifiers (SendGrid's
EventWebhook, Twilio's RequestValidator) as well as Herald's, and parses into the expected events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from drivers.email.sendgrid import SendgridDriver
from drivers.email.sendgrid_webhooks import SendgridWebhookVerifier, parse_events
from drivers.email.ses import SesDriver
from drivers.email.ses_webhooks import SesWebhook
from drivers.fakes.aws import AwsHandle
from drivers.fakes.meta import MetaEmulator
from drivers.fakes.sendgrid import SendgridEmulator
from drivers.fakes.twilio import TwilioEmulator
from drivers.sms.twilio import TwilioSmsDriver
from drivers.sms.twilio_webhooks import TwilioWebhookVerifier, parse_status_callback
from drivers.whatsapp.meta import MetaWhatsappDriver
from drivers.whatsapp.meta_webhooks import MetaWebhookVerifier, parse_statuses
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.feedback.events import BounceKind, DeliveryEvent, EventType, RejectReason
from tests.support.receiver import Delivery, Receiver

NUMBER = "+14155552671"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


def message(i: int, channel: Channel, to: Address) -> OutboundMessage:
    content = Content(subject="Hi", text="Your code is 123456", html="<p>Your code is 123456</p>")
    return OutboundMessage(f"msg_{i:032x}", "t_001", channel, to, content)


def _statuses_of(posts: list[Delivery], message_ids: set[str]) -> list[DeliveryEvent]:
    """The Meta status events in ``posts`` that concern ``message_ids``."""
    return [e for post in posts for e in parse_statuses(post.body) if e.message_id in message_ids]


def wait(receiver: Receiver, path: str, n: int) -> list[Delivery]:
    return receiver.wait(path, lambda found: len(found) >= n, timeout_s=10)


async def test_sendgrid_posts_one_signed_batch_of_events(
    sendgrid_emu: SendgridEmulator, env: dict[str, str], receiver: Receiver
) -> None:
    sendgrid_emu.control({"webhook_url": receiver.url("/sg"), "bounce": ["gone@example.com"]})
    try:
        async with SendgridDriver.from_env(env) as driver:
            sent = await driver.send_batch(
                [message(1, Channel.EMAIL, Address(email="ok@example.com")),
                 message(2, Channel.EMAIL, Address(email="gone@example.com"))]
            )  # fmt: skip
        [batch] = wait(receiver, "/sg", 1)  # both messages' events in one request
    finally:
        sendgrid_emu.control({"webhook_url": None})
    signature = batch.headers["x-twilio-email-event-webhook-signature"]
    stamp = batch.headers["x-twilio-email-event-webhook-timestamp"]
    sdk = EventWebhook(env["HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY"])
    assert sdk.verify_signature(batch.body.decode(), signature, stamp)
    SendgridWebhookVerifier.from_env(env).verify(batch.body, batch.headers)
    events = parse_events(batch.body)
    by_message = {(e.message_id, e.type, e.bounce_kind) for e in events}
    assert by_message == {
        ("msg_" + "1".zfill(32), EventType.QUEUED, None),
        ("msg_" + "1".zfill(32), EventType.DELIVERED, None),
        ("msg_" + "2".zfill(32), EventType.QUEUED, None),
        ("msg_" + "2".zfill(32), EventType.BOUNCED, BounceKind.HARD),
    }
    assert {e.provider_message_id for e in events} == {r.provider_message_id for r in sent}


async def test_twilio_status_callbacks_are_signed_for_the_url_it_was_given(
    twilio_emu: TwilioEmulator, env: dict[str, str], receiver: Receiver
) -> None:
    twilio_emu.control({"undelivered": {"+14155552672": 30005}})
    public = receiver.url("")
    async with TwilioSmsDriver.from_env({**env, "HERALD_PUBLIC_URL": public}) as driver:
        ok, dead = await driver.send_batch(
            [message(1, Channel.SMS, Address(phone=NUMBER)), message(2, Channel.SMS, Address(phone="+14155552672"))]
        )
    callbacks = wait(receiver, "/webhooks/sms/twilio?herald_message_id=msg_" + "1".zfill(32), 2)
    callbacks += wait(receiver, "/webhooks/sms/twilio?herald_message_id=msg_" + "2".zfill(32), 2)
    verifier = TwilioWebhookVerifier.from_env(env)
    sdk = RequestValidator(env["HERALD_TWILIO_AUTH_TOKEN"])
    outcomes = []
    for callback in callbacks:
        url = public + callback.path
        params = dict(parse_qsl(callback.body.decode()))
        assert sdk.validate(url, params, callback.headers["x-twilio-signature"])  # Twilio's own check
        verifier.verify(url, callback.body, callback.headers)
        [event] = parse_status_callback(callback.body, url=url)
        outcomes.append((event.message_id, event.provider_message_id, event.type, event.reject_reason))
    assert outcomes == [
        ("msg_" + "1".zfill(32), ok.provider_message_id, EventType.SENT, None),
        ("msg_" + "1".zfill(32), ok.provider_message_id, EventType.DELIVERED, None),
        ("msg_" + "2".zfill(32), dead.provider_message_id, EventType.SENT, None),
        ("msg_" + "2".zfill(32), dead.provider_message_id, EventType.FAILED, RejectReason.INVALID),
    ]


async def test_a_tenants_own_twilio_account_puts_the_tenant_on_the_callback(
    twilio_emu: TwilioEmulator, env: dict[str, str]
) -> None:
    tenant_env = {**env, "HERALD_PUBLIC_URL": "http://127.0.0.1:9/", "HERALD_WEBHOOK_TENANT": "t_own"}
    async with TwilioSmsDriver.from_env(tenant_env) as driver:
        [result] = await driver.send_batch([message(3, Channel.SMS, Address(phone=NUMBER))])
    assert result.ok
    callback = twilio_emu.received[-1].body["StatusCallback"]
    assert callback == f"http://127.0.0.1:9/webhooks/sms/twilio?herald_message_id=msg_{'3'.zfill(32)}&tenant=t_own"


async def test_meta_posts_signed_statuses_echoing_the_message_id(
    meta_emu: MetaEmulator, env: dict[str, str], receiver: Receiver
) -> None:
    ours = {"msg_" + "1".zfill(32), "msg_" + "2".zfill(32)}
    meta_emu.control({"webhook_url": receiver.url("/meta"), "fail": {"14155552672": 131049}})
    try:
        async with MetaWhatsappDriver.from_env(env) as driver:
            await driver.send_batch(
                [message(1, Channel.WHATSAPP, Address(phone=NUMBER)),
                 message(2, Channel.WHATSAPP, Address(phone="+14155552672"))]
            )  # fmt: skip
        # the emulator is shared: another test's late status posts may reach this receiver too
        posts = receiver.wait("/meta", lambda found: len(_statuses_of(found, ours)) >= 4, timeout_s=10)
    finally:
        meta_emu.control({"webhook_url": None})
    verifier = MetaWebhookVerifier.from_env(env)
    for post in posts:
        verifier.verify(post.body, post.headers)
    events = _statuses_of(posts, ours)
    assert sorted((e.message_id or "", e.type.value) for e in events) == [
        ("msg_" + "1".zfill(32), "delivered"),
        ("msg_" + "1".zfill(32), "sent"),
        ("msg_" + "2".zfill(32), "failed"),
        ("msg_" + "2".zfill(32), "sent"),
    ]
    assert (
        verifier.handshake(
            {"hub.mode": "subscribe", "hub.verify_token": env["HERALD_META_VERIFY_TOKEN"], "hub.challenge": "42"}
        )
        == "42"
    )


@pytest.mark.parametrize("version", ["1", "2"])
async def test_ses_events_arrive_as_signed_sns_notifications(aws: AwsHandle, receiver: Receiver, version: str) -> None:
    env = aws.env()
    aws.proxy.control(
        {"sns_endpoint": receiver.url("/ses"), "bounce": ["gone@example.com"], "signature_version": version}
    )
    try:
        async with SesDriver.from_env(env) as driver:
            ok = await driver.send_one(message(1, Channel.EMAIL, Address(email="ok@example.com")))
            gone = await driver.send_one(message(2, Channel.EMAIL, Address(email="gone@example.com")))
        posts = wait(receiver, "/ses", 2)
    finally:
        aws.proxy.control({"sns_endpoint": None})
    webhook = SesWebhook.from_env(env)  # fetches the proxy's certificate, allowed by the fakes' pattern
    outcomes = set()
    for post in posts:
        assert json.loads(post.body)["SignatureVersion"] == version
        received = await webhook.receive(post.body, post.headers)
        outcomes |= {(e.provider_message_id, e.type, e.bounce_kind, e.reject_reason) for e in received.events}
    assert outcomes == {
        (ok.provider_message_id, EventType.DELIVERED, None, None),
        (gone.provider_message_id, EventType.BOUNCED, BounceKind.HARD, RejectReason.INVALID),
    }
