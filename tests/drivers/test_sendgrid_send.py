"""SendgridDriver's SendGrid specifics against its emulator (and the sendgrid SDK against the emulator).
The failure classes, transport errors, outages and log redaction are in the contract suite."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from drivers.email.sendgrid import SendgridDriver
from drivers.fakes.sendgrid import SendgridEmulator
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import BadRecipientError, ConfigurationError, PermanentError, ProviderDownError, ThrottledError

TO = "jane.doe@example.com"


def msg(n: int = 1, to: str = TO, **kw: object) -> OutboundMessage:
    return OutboundMessage(
        message_id=f"msg_{n:04d}",
        tenant="acme",
        channel=Channel.EMAIL,
        to=Address(email=to, name="Jane Doe"),
        content=Content(subject="Your order shipped", text="Order #1234 is on its way.", html="<p>Order #1234</p>"),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def emu(sendgrid_emu: SendgridEmulator) -> SendgridEmulator:
    return sendgrid_emu


@pytest.fixture
async def driver(env: dict[str, str]) -> AsyncIterator[SendgridDriver]:
    async with SendgridDriver.from_env(env) as d:
        yield d


async def test_success_returns_message_id(driver: SendgridDriver, emu: SendgridEmulator) -> None:
    result = await driver.send_one(msg(tags=("order-update", "order-update", "shipping")))
    assert result.ok and result.provider == "sendgrid"
    assert result.provider_message_id and len(result.provider_message_id) == 22
    assert result.cost_usd is None  # prices live in the routing table
    body = emu.received[0].body
    assert body["personalizations"][0]["to"] == [{"email": TO, "name": "Jane Doe"}]
    assert body["personalizations"][0]["custom_args"]["message_id"] == "msg_0001"
    assert body["categories"] == ["order-update", "shipping"]
    assert body["content"][0]["type"] == "text/plain" and body["content"][1]["type"] == "text/html"
    assert body["from"] == {"email": "no-reply@herald.local", "name": "Herald"}
    assert emu.received[0].headers["authorization"] == "***"


async def test_custom_headers_reach_the_emulator(driver: SendgridDriver, emu: SendgridEmulator) -> None:
    headers = {
        "List-Unsubscribe": "<https://herald.example/u/abc>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert (await driver.send_one(msg(headers=headers))).ok
    assert emu.received[0].body["headers"] == headers


async def test_invalid_recipient_from_emulator_is_bad_recipient(driver: SendgridDriver, emu: SendgridEmulator) -> None:
    emu.fail(
        400,
        {
            "errors": [
                {"message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email", "help": None}
            ]
        },
    )
    with pytest.raises(BadRecipientError) as info:
        await driver.send_one(msg())
    assert info.value.status_code == 400 and info.value.code == "personalizations.0.to.0.email"


async def test_malformed_address_is_bad_recipient_before_sending(driver: SendgridDriver, emu: SendgridEmulator) -> None:
    with pytest.raises(BadRecipientError):
        await driver.send_one(msg(to="not-an-address"))
    assert emu.received == []


async def test_other_400_is_permanent(driver: SendgridDriver, emu: SendgridEmulator) -> None:
    emu.fail(400, {"errors": [{"message": "The subject is required.", "field": "subject", "help": None}]})
    with pytest.raises(PermanentError) as info:
        await driver.send_one(msg())
    assert not isinstance(info.value, BadRecipientError)
    emu.fail(413, "payload too large")
    with pytest.raises(PermanentError):
        await driver.send_one(msg())


async def test_429_is_throttled_with_retry_after(driver: SendgridDriver, emu: SendgridEmulator) -> None:
    emu.fail(
        429, {"errors": [{"message": "too many requests", "field": None, "help": None}]}, headers={"Retry-After": "7"}
    )
    with pytest.raises(ThrottledError) as info:
        await driver.send_one(msg())
    assert info.value.retry_after_s == 7.0
    emu.fail(429, None, headers={"X-RateLimit-Reset": str(int(time.time()) + 30)})  # SendGrid's own hint
    with pytest.raises(ThrottledError) as info:
        await driver.send_one(msg())
    assert info.value.retry_after_s is not None and 25 <= info.value.retry_after_s <= 30


async def test_key_the_emulator_refuses_is_provider_down(emu: SendgridEmulator, env: dict[str, str]) -> None:
    async with SendgridDriver.from_env(env | {"HERALD_SENDGRID_API_KEY": "SG.wrong"}) as d:
        results = await d.send_batch([msg(1), msg(2)])
    assert all(isinstance(r.error, ProviderDownError) and r.provider_down for r in results)
    assert results[0].error is not None and results[0].error.status_code == 401


async def test_batch_with_partial_failure(driver: SendgridDriver, emu: SendgridEmulator) -> None:
    results = await driver.send_batch([msg(1), msg(2, to="broken@"), msg(3)])
    assert [r.message_id for r in results] == ["msg_0001", "msg_0002", "msg_0003"]
    assert results[0].ok and results[2].ok
    assert isinstance(results[1].error, BadRecipientError)
    assert len(emu.received) == 2


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_SENDGRID_API_KEY"):
        SendgridDriver.from_env({})


def test_official_sdk_against_the_emulator(emu: SendgridEmulator, env: dict[str, str]) -> None:
    pytest.importorskip("sendgrid")
    from python_http_client.exceptions import UnauthorizedError
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import Mail

    url = env["HERALD_SENDGRID_BASE_URL"]
    mail = Mail(from_email="no-reply@herald.local", to_emails=TO, subject="Hi", plain_text_content="Hello")
    response = SendGridAPIClient(emu.api_key, host=url).send(mail)
    assert response.status_code == 202 and response.headers["X-Message-Id"]
    assert emu.received[-1].body["personalizations"][0]["to"][0]["email"] == TO
    with pytest.raises(UnauthorizedError):
        SendGridAPIClient("SG.wrong", host=url).send(mail)
