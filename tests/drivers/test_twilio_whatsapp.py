"""TwilioWhatsappDriver against the Twilio emulator: whatsapp:+E164 addresses, Content templates, text. The failure
classes, transport errors, outages and log redaction are in the contract suite."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers import create_driver
from drivers.fakes.twilio import CONTENT_SID, WHATSAPP_FROM, TwilioEmulator
from drivers.whatsapp.twilio import TwilioWhatsappDriver
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import ConfigurationError, FailureClass, RetryableError

NUMBER = "+14155552671"


def wa(
    i: int, to: str = NUMBER, text: str = "Order 1234 shipped", template: dict[str, Any] | None = None
) -> OutboundMessage:
    extra = {"whatsapp_template": template} if template is not None else {}
    return OutboundMessage(f"msg_{i}", "t_001", Channel.WHATSAPP, Address(phone=to), Content(text=text), extra=extra)


TEMPLATE = {
    "content_sid": CONTENT_SID,
    "parameters": ["12/1"],
    "category": "utility",
    "name": "order_shipped",
}


@pytest.fixture
def emu(twilio_emu: TwilioEmulator) -> TwilioEmulator:
    return twilio_emu


@pytest.fixture
async def driver(env: dict[str, str]) -> AsyncIterator[TwilioWhatsappDriver]:
    async with TwilioWhatsappDriver.from_env(env) as drv:
        yield drv


async def test_template_goes_as_content_sid_with_variables(driver: TwilioWhatsappDriver, emu: TwilioEmulator) -> None:
    [result] = await driver.send_batch([wa(1, template=TEMPLATE)])
    assert result.ok and (result.provider_message_id or "").startswith("SM")
    assert result.cost_usd is None  # prices live in the routing table
    body = emu.received[0].body
    assert body["To"] == f"whatsapp:{NUMBER}" and body["From"] == WHATSAPP_FROM
    assert body["ContentSid"] == CONTENT_SID and json.loads(body["ContentVariables"]) == {"1": "12/1"}
    assert "Body" not in body


async def test_text_inside_the_window(driver: TwilioWhatsappDriver, emu: TwilioEmulator) -> None:
    [result] = await driver.send_batch([wa(1)])
    assert result.ok
    assert emu.received[0].body["Body"] == "Order 1234 shipped"


async def test_failures_partial_batch(driver: TwilioWhatsappDriver, emu: TwilioEmulator) -> None:
    emu.control({"opted_out": ["+14155552672"]})
    results = await driver.send_batch(
        [
            wa(1, template=TEMPLATE),
            wa(2, to="+14155552672"),  # 21610
            wa(3, template={"name": "order_shipped", "language": "en_US"}),  # no Content sid: never sent
            wa(4, template={"content_sid": "HX" + "0" * 32, "parameters": ["x"]}),  # unknown: 21655
            wa(5, to="12"),  # not a number
            wa(6, template={"content_sid": CONTENT_SID}),  # missing variables: 21656
        ]
    )
    got = [(r.error.failure_class, r.error.code) if r.error else None for r in results]
    assert got == [
        None,
        (FailureClass.BAD_RECIPIENT, "21610"),
        (FailureClass.PERMANENT, "bad_template"),
        (FailureClass.PERMANENT, "21655"),
        (FailureClass.BAD_RECIPIENT, "invalid_number"),
        (FailureClass.PERMANENT, "21656"),
    ]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, 63016, FailureClass.PERMANENT),
        (429, 63018, FailureClass.THROTTLED),
        (500, 30008, FailureClass.RETRYABLE),
    ],
)
async def test_whatsapp_codes(
    driver: TwilioWhatsappDriver, emu: TwilioEmulator, status: int, code: int, expected: FailureClass
) -> None:
    emu.fail(status, {"code": code, "message": "x", "status": status})
    [result] = await driver.send_batch([wa(1)])
    assert result.error is not None and result.error.failure_class is expected
    if expected is FailureClass.THROTTLED:
        assert isinstance(result.error, RetryableError) and result.error.retry_after_s


def test_from_env_needs_the_whatsapp_sender(env: dict[str, str]) -> None:
    del env["HERALD_TWILIO_WHATSAPP_FROM"]
    with pytest.raises(ConfigurationError, match="HERALD_TWILIO_WHATSAPP_FROM"):
        create_driver(Channel.WHATSAPP, "twilio", env)


async def test_sender_without_prefix_gets_it(env: dict[str, str], emu: TwilioEmulator) -> None:
    env["HERALD_TWILIO_WHATSAPP_FROM"] = WHATSAPP_FROM.removeprefix("whatsapp:")
    async with TwilioWhatsappDriver.from_env(env) as drv:
        [result] = await drv.send_batch([wa(1)])
    assert result.ok and emu.received[0].body["From"] == WHATSAPP_FROM


async def test_no_secret_or_number_in_logs(
    driver: TwilioWhatsappDriver, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    results = await driver.send_batch([wa(1, template=TEMPLATE), wa(2, to="+1415555267")])
    ours = [r for r in caplog.records if not r.threadName.startswith("fake-")]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours) + repr([r.error for r in results])
    for secret in (env["HERALD_TWILIO_AUTH_TOKEN"], "4155552671", "415555267", "12/1"):
        assert secret not in text
