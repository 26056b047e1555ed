"""otp_login:v4 on WhatsApp: Meta's authentication template (the code in the body and on the copy-code
button) and Twilio's whatsapp/authentication content, each driver against its emulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.fakes.meta import MetaEmulator, start_meta
from drivers.fakes.twilio import RunningEmulator, TwilioEmulator, start_twilio
from drivers.whatsapp.meta import MetaWhatsappDriver
from drivers.whatsapp.twilio import TwilioWhatsappDriver
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import FailureClass
from engine.routing import SHIPPED_TABLE, load_table
from engine.templating import TemplateCatalog

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NUMBER = "+14155550123"


def otp_request(code: str = "384921", locale: str = "en-GB") -> dict[str, Any]:
    """The template request the engine makes of the shipped otp_login:v4 for one message."""
    resolved = TemplateCatalog(TEMPLATES).resolve("otp_login:v4", locale=locale, channel=Channel.WHATSAPP)
    assert resolved.manifest.whatsapp is not None
    return resolved.manifest.whatsapp.request({"code": code}, resolved.locale_used)


def wa(i: int, template: dict[str, Any]) -> OutboundMessage:
    return OutboundMessage(
        f"msg_{i}",
        "t_001",
        Channel.WHATSAPP,
        Address(phone=NUMBER),
        Content(text="fallback text"),
        extra={"whatsapp_template": template},
    )


@pytest.fixture(scope="module")
def meta() -> Iterator[tuple[RunningEmulator, dict[str, str]]]:
    running, env = start_meta()
    yield running, env
    running.stop()


@pytest.fixture
def meta_emu(meta: tuple[RunningEmulator, dict[str, str]]) -> MetaEmulator:
    meta[0].emulator.reset()
    assert isinstance(meta[0].emulator, MetaEmulator)
    return meta[0].emulator


@pytest.fixture
async def meta_driver(meta: tuple[RunningEmulator, dict[str, str]]) -> AsyncIterator[MetaWhatsappDriver]:
    async with MetaWhatsappDriver.from_env(meta[1]) as driver:
        yield driver


async def test_meta_gets_the_authentication_template_with_its_copy_code_button(
    meta_driver: MetaWhatsappDriver, meta_emu: MetaEmulator
) -> None:
    [result] = await meta_driver.send_batch([wa(1, otp_request("384921"))])
    assert result.ok and (result.provider_message_id or "").startswith("wamid."), result.error
    assert result.cost_usd is None  # prices live in the routing table: authentication, US
    table = load_table(SHIPPED_TABLE)
    assert table.unit_price(Channel.WHATSAPP, "meta", "US", category="authentication") == pytest.approx(0.004)
    [received] = meta_emu.received
    assert received.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "biz_opaque_callback_data": "msg_1",
        "to": "14155550123",
        "type": "template",
        "template": {
            "name": "otp_login",
            "language": {"code": "en_GB"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "384921"}]},
                {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "384921"}]},
            ],
        },
    }


async def test_each_approved_language_is_reached(meta_driver: MetaWhatsappDriver, meta_emu: MetaEmulator) -> None:
    results = await meta_driver.send_batch([wa(1, otp_request(locale="en")), wa(2, otp_request(locale="en-GB"))])
    assert all(r.ok for r in results), [r.error for r in results]
    assert {r.body["template"]["language"]["code"] for r in meta_emu.received} == {"en", "en_GB"}


def components(code: str, button: list[dict[str, Any]] | None) -> dict[str, Any]:
    body = [{"type": "body", "parameters": [{"type": "text", "text": code}]}]
    return {"name": "otp_login", "language": "en_GB", "components": body + (button or [])}


def url_button(text: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": text}], **extra}
    ]


@pytest.mark.parametrize(
    ("template", "code"),
    [
        (components("384921", None), "131008"),  # no copy-code button
        (components("384921", url_button("111111")), "131009"),  # the button copies another code
        (components("1234567890123456", url_button("1234567890123456")), "131009"),  # longer than 15
        (components("384921", url_button("384921", sub_type="quick_reply")), "131009"),
        (components("384921", [*url_button("384921"), *url_button("x", index="1")]), "132000"),
        ({"name": "otp_login", "language": "en_GB", "parameters": ["384921"]}, "131008"),  # body only, as before
    ],
)
async def test_the_emulator_holds_the_driver_to_the_authentication_shape(
    meta_driver: MetaWhatsappDriver, meta_emu: MetaEmulator, template: dict[str, Any], code: str
) -> None:
    [result] = await meta_driver.send_batch([wa(1, template)])
    assert result.error is not None and (result.error.failure_class, result.error.code) == (
        FailureClass.PERMANENT,
        code,
    )


async def test_a_template_approved_through_control_with_buttons(
    meta_driver: MetaWhatsappDriver, meta_emu: MetaEmulator
) -> None:
    meta_emu.control({"templates": {"order_ready": {"en_US": {"body": 1, "buttons": [{"sub_type": "quick_reply"}]}}}})
    button = {"sub_type": "quick_reply", "index": 0, "text": "track-7"}
    ok = {"name": "order_ready", "language": "en_US", "parameters": ["A-1"], "buttons": [button]}
    missing = {"name": "order_ready", "language": "en_US", "parameters": ["A-1"]}
    results = await meta_driver.send_batch([wa(1, ok), wa(2, missing)])
    assert results[0].ok, results[0].error
    assert results[1].error is not None and results[1].error.code == "131008"
    sent = next(r.body for r in meta_emu.received if r.body["template"].get("components", [{}])[-1]["type"] == "button")
    assert sent["template"]["components"][1]["parameters"] == [{"type": "payload", "payload": "track-7"}]


@pytest.fixture(scope="module")
def twilio() -> Iterator[tuple[RunningEmulator, dict[str, str]]]:
    running, env = start_twilio()
    yield running, env
    running.stop()


async def test_twilio_sends_the_authentication_content_with_the_code_as_its_one_variable(
    twilio: tuple[RunningEmulator, dict[str, str]],
) -> None:
    emulator = twilio[0].emulator
    assert isinstance(emulator, TwilioEmulator)
    emulator.reset()
    request = otp_request("246810")
    emulator.control({"content": {request["content_sid"]: 1}})
    async with TwilioWhatsappDriver.from_env(twilio[1]) as driver:
        [result] = await driver.send_batch([wa(1, request)])
    assert result.ok and (result.provider_message_id or "").startswith("SM"), result.error
    [received] = emulator.received
    assert received.body["ContentSid"] == request["content_sid"]
    assert json.loads(received.body["ContentVariables"]) == {"1": "246810"}
    assert received.body["To"] == f"whatsapp:{NUMBER}" and "Body" not in received.body


def test_twilio_numbers_button_values_after_the_body() -> None:
    from drivers.whatsapp import WhatsappTemplate

    template = WhatsappTemplate.from_extra(
        {
            "whatsapp_template": {
                "name": "order_ready",
                "parameters": ["A-1", "Friday"],
                "buttons": [
                    {"sub_type": "url", "index": 0, "text": "trk-9", "variable": 3},
                    {"sub_type": "quick_reply", "index": 1, "text": "A-1", "variable": 1},
                ],
            }
        }
    )
    assert template is not None
    assert template.content_variables() == {"1": "A-1", "2": "Friday", "3": "trk-9"}
