"""MetaWhatsappDriver against the Meta Cloud API emulator over loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers import create_driver
from drivers.fakes.meta import MetaEmulator
from drivers.whatsapp.meta import MetaWhatsappDriver
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import ConfigurationError, FailureClass, ProviderDownError

NUMBER = "+14155552671"
TEMPLATE = {"name": "order_shipped", "language": "en_US", "parameters": ["QZX-7731"], "category": "utility"}


def wa(
    i: int, to: str = NUMBER, text: str = "Order QZX-7731 shipped", template: dict[str, Any] | None = None
) -> OutboundMessage:
    extra = {"whatsapp_template": template} if template is not None else {}
    return OutboundMessage(f"msg_{i}", "t_001", Channel.WHATSAPP, Address(phone=to), Content(text=text), extra=extra)


def graph(code: int, message: str = "x") -> dict[str, Any]:
    return {"error": {"message": f"(#{code}) {message}", "type": "OAuthException", "code": code, "fbtrace_id": "Az"}}


@pytest.fixture
def emu(meta_emu: MetaEmulator) -> MetaEmulator:
    return meta_emu


@pytest.fixture
async def driver(env: dict[str, str]) -> AsyncIterator[MetaWhatsappDriver]:
    async with MetaWhatsappDriver.from_env(env) as drv:
        yield drv


async def test_template_message(driver: MetaWhatsappDriver, emu: MetaEmulator, env: dict[str, str]) -> None:
    [result] = await driver.send_batch([wa(1, template=TEMPLATE)])
    assert result.ok and (result.provider_message_id or "").startswith("wamid.")
    assert result.cost_usd is None  # prices live in the routing table
    [request] = emu.received
    assert request.path == f"/v23.0/{env['HERALD_META_PHONE_NUMBER_ID']}/messages"
    assert request.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "biz_opaque_callback_data": "msg_1",
        "to": "14155552671",  # bare digits
        "type": "template",
        "template": {
            "name": "order_shipped",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "QZX-7731"}]}],
        },
    }


async def test_named_parameters_and_raw_components(driver: MetaWhatsappDriver, emu: MetaEmulator) -> None:
    raw = [
        {"type": "body", "parameters": [{"type": "text", "text": "QZX-7731"}]},
        {"type": "button", "index": "0", "sub_type": "url", "parameters": []},
    ]
    results = await driver.send_batch(
        [
            wa(1, template={"name": "order_shipped", "language": "de_DE", "parameters": {"order": "QZX-7731"}}),
            wa(2, template={"name": "order_shipped", "language": "en_US", "components": raw}),
        ]
    )
    assert all(r.ok for r in results)
    by_lang = {r.body["template"]["language"]["code"]: r.body["template"] for r in emu.received}
    assert by_lang["de_DE"]["components"][0]["parameters"] == [
        {"type": "text", "parameter_name": "order", "text": "QZX-7731"}
    ]
    assert by_lang["en_US"]["components"] == raw


async def test_text_inside_the_service_window(driver: MetaWhatsappDriver, emu: MetaEmulator) -> None:
    emu.control({"open_windows": ["14155552671"]})
    results = await driver.send_batch([wa(1), wa(2, to="+14155552672")])
    assert results[0].ok
    sent = next(r.body for r in emu.received if r.body["to"] == "14155552671")
    assert sent["type"] == "text" and sent["text"] == {"preview_url": False, "body": "Order QZX-7731 shipped"}
    assert results[1].error is not None
    assert (results[1].error.failure_class, results[1].error.code) == (FailureClass.PERMANENT, "131047")


async def test_failure_classes_in_one_partial_batch(driver: MetaWhatsappDriver, emu: MetaEmulator) -> None:
    emu.control({"not_on_whatsapp": ["14155552673"]})
    results = await driver.send_batch(
        [
            wa(1, template=TEMPLATE),
            wa(2, template={"name": "not_approved", "language": "en_US"}),  # 132001
            wa(3, template={"name": "order_shipped", "language": "en_US"}),  # 132000 parameter count
            wa(4, to="+14155552673"),  # 131026 not on WhatsApp
            wa(5, to="+15558675310"),  # invalid number: never sent
            wa(6, text=""),  # nothing to send
        ]
    )
    got = [(r.error.failure_class, r.error.code) if r.error else None for r in results]
    assert got == [
        None,
        (FailureClass.PERMANENT, "132001"),
        (FailureClass.PERMANENT, "132000"),
        (FailureClass.BAD_RECIPIENT, "131026"),
        (FailureClass.BAD_RECIPIENT, "invalid_number"),
        (FailureClass.PERMANENT, "empty_body"),
    ]
    assert len(emu.received) == 4


@pytest.mark.parametrize(
    ("status", "code", "expected", "retry_after"),
    [
        (400, 130429, FailureClass.THROTTLED, 1.0),
        (400, 131056, FailureClass.THROTTLED, 6.0),
        (400, 80007, FailureClass.THROTTLED, 60.0),
        (400, 131050, FailureClass.BAD_RECIPIENT, None),
        (500, 131000, FailureClass.RETRYABLE, None),
        (503, 131016, FailureClass.RETRYABLE, 30.0),
    ],
)
async def test_meta_codes(
    driver: MetaWhatsappDriver,
    emu: MetaEmulator,
    status: int,
    code: int,
    expected: FailureClass,
    retry_after: float | None,
) -> None:
    emu.fail(status, graph(code))
    [result] = await driver.send_batch([wa(1, template=TEMPLATE)])
    assert result.error is not None and result.error.failure_class is expected
    assert getattr(result.error, "retry_after_s", None) == retry_after


async def test_bad_token_is_provider_down(env: dict[str, str]) -> None:
    env["HERALD_META_TOKEN"] = "expired"
    async with MetaWhatsappDriver.from_env(env) as drv:
        results = await drv.send_batch([wa(1, template=TEMPLATE), wa(2, template=TEMPLATE)])
    assert all(isinstance(r.error, ProviderDownError) for r in results)
    assert results[0].error is not None and (results[0].error.code, results[0].error.status_code) == ("190", 401)


async def test_account_problem_is_provider_down(driver: MetaWhatsappDriver, emu: MetaEmulator) -> None:
    emu.fail(400, graph(131031, "Business account locked"))
    [result] = await driver.send_batch([wa(1, template=TEMPLATE)])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "131031"


async def test_wrong_phone_number_id_is_permanent(env: dict[str, str]) -> None:
    env["HERALD_META_PHONE_NUMBER_ID"] = "1"
    async with MetaWhatsappDriver.from_env(env) as drv:
        [result] = await drv.send_batch([wa(1, template=TEMPLATE)])
    assert result.error is not None and result.error.code == "100"


@pytest.mark.parametrize("missing", ["HERALD_META_TOKEN", "HERALD_META_PHONE_NUMBER_ID"])
def test_missing_setting_names_the_variable(env: dict[str, str], missing: str) -> None:
    del env[missing]
    with pytest.raises(ConfigurationError, match=missing):
        create_driver(Channel.WHATSAPP, "meta", env)


async def test_no_secret_or_number_in_logs(
    driver: MetaWhatsappDriver, emu: MetaEmulator, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.fail(400, graph(131030, "Recipient phone number 14155552671 not in allowed list"))
    results = await driver.send_batch([wa(1, template=TEMPLATE), wa(2, template=TEMPLATE)])
    assert any(not r.ok for r in results)
    ours = [r for r in caplog.records if not r.threadName.startswith("fake-")]
    assert ours
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours) + repr([r.error for r in results])
    text += " ".join(r.error.detail for r in results if r.error)
    for secret in (env["HERALD_META_TOKEN"], "4155552671", "QZX-7731"):
        assert secret not in text


async def test_outage_until_reset(driver: MetaWhatsappDriver, emu: MetaEmulator) -> None:
    emu.fail(503, graph(131016, "Service unavailable"), outage=True, latency_ms=20)
    results = await driver.send_batch([wa(i, template=TEMPLATE) for i in range(3)])
    assert [r.error.code if r.error else None for r in results] == ["131016"] * 3
    emu.reset()
    assert all(r.ok for r in await driver.send_batch([wa(9, template=TEMPLATE)]))
