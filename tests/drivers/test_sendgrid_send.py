"""SendgridDriver against the SendGrid emulator over loopback (and the sendgrid SDK against the emulator)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from drivers.base import Address, Content, OutboundMessage
from drivers.email.sendgrid import SendgridDriver
from drivers.fakes.sendgrid import SendgridHandle, start_sendgrid
from engine.channels import Channel
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)
from engine.redaction import RedactingFilter

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


@pytest.fixture(scope="module")
def emu() -> Iterator[SendgridHandle]:
    handle = start_sendgrid()
    yield handle
    handle.stop()


@pytest.fixture
async def driver(emu: SendgridHandle) -> AsyncIterator[SendgridDriver]:
    emu.reset()
    async with SendgridDriver.from_env(emu.env()) as d:
        yield d


async def test_success_returns_message_id(driver: SendgridDriver, emu: SendgridHandle) -> None:
    result = await driver.send_one(msg(tags=("order-update", "order-update", "shipping")))
    assert result.ok and result.provider == "sendgrid"
    assert result.provider_message_id and len(result.provider_message_id) == 22
    assert result.cost_usd is None  # prices live in the routing table
    body = emu.received[0]["body"]
    assert body["personalizations"][0]["to"] == [{"email": TO, "name": "Jane Doe"}]
    assert body["personalizations"][0]["custom_args"]["message_id"] == "msg_0001"
    assert body["categories"] == ["order-update", "shipping"]
    assert body["content"][0]["type"] == "text/plain" and body["content"][1]["type"] == "text/html"
    assert body["from"] == {"email": "no-reply@herald.local", "name": "Herald"}
    assert emu.received[0]["headers"]["authorization"] == "***"


async def test_custom_headers_reach_the_emulator(driver: SendgridDriver, emu: SendgridHandle) -> None:
    headers = {
        "List-Unsubscribe": "<https://herald.example/u/abc>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert (await driver.send_one(msg(headers=headers))).ok
    assert emu.received[0]["body"]["headers"] == headers


async def test_invalid_recipient_from_emulator_is_bad_recipient(driver: SendgridDriver, emu: SendgridHandle) -> None:
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


async def test_malformed_address_is_bad_recipient_before_sending(driver: SendgridDriver, emu: SendgridHandle) -> None:
    with pytest.raises(BadRecipientError):
        await driver.send_one(msg(to="not-an-address"))
    assert emu.received == []


async def test_other_400_is_permanent(driver: SendgridDriver, emu: SendgridHandle) -> None:
    emu.fail(400, {"errors": [{"message": "The subject is required.", "field": "subject", "help": None}]})
    with pytest.raises(PermanentError) as info:
        await driver.send_one(msg())
    assert not isinstance(info.value, BadRecipientError)
    emu.fail(413, "payload too large")
    with pytest.raises(PermanentError):
        await driver.send_one(msg())


async def test_429_is_throttled_with_retry_after(driver: SendgridDriver, emu: SendgridHandle) -> None:
    emu.fail(
        429, {"errors": [{"message": "too many requests", "field": None, "help": None}]}, headers={"Retry-After": "7"}
    )
    with pytest.raises(ThrottledError) as info:
        await driver.send_one(msg())
    assert info.value.retry_after_s == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retryable(driver: SendgridDriver, emu: SendgridHandle, status: int) -> None:
    emu.fail(status, "Ack! Bad proxy!")
    with pytest.raises(RetryableError) as info:
        await driver.send_one(msg())
    assert not isinstance(info.value, ThrottledError) and info.value.status_code == status


async def test_timeout_is_retryable(emu: SendgridHandle) -> None:
    emu.reset()
    emu.fail(202, latency_ms=600)
    env = emu.env() | {"HERALD_SENDGRID_TIMEOUT_S": "0.2"}
    async with SendgridDriver.from_env(env) as d:
        with pytest.raises(RetryableError) as info:
            await d.send_one(msg())
    assert info.value.code == "timeout"


async def test_bad_key_is_provider_down(emu: SendgridHandle) -> None:
    emu.reset()
    async with SendgridDriver.from_env(emu.env() | {"HERALD_SENDGRID_API_KEY": "SG.wrong"}) as d:
        with pytest.raises(ProviderDownError) as info:
            await d.send_one(msg())
        assert info.value.status_code == 401
        with pytest.raises(ProviderDownError):
            await d.send_batch([msg(1), msg(2)])


async def test_batch_with_partial_failure(driver: SendgridDriver, emu: SendgridHandle) -> None:
    results = await driver.send_batch([msg(1), msg(2, to="broken@"), msg(3)])
    assert [r.message_id for r in results] == ["msg_0001", "msg_0002", "msg_0003"]
    assert results[0].ok and results[2].ok
    assert isinstance(results[1].error, BadRecipientError)
    assert len(emu.received) == 2


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_SENDGRID_API_KEY"):
        SendgridDriver.from_env({})


async def test_debug_log_has_no_address_or_key(
    driver: SendgridDriver, emu: SendgridHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.DEBUG):
        assert (await driver.send_one(msg())).ok
        emu.fail(400, {"errors": [{"message": f"Does not contain a valid address: {TO}", "field": "to", "help": None}]})
        with pytest.raises(BadRecipientError) as info:
            await driver.send_one(msg())
        logging.getLogger("test").debug("failed: %s", info.value)
    assert caplog.records
    assert TO not in caplog.text and emu.api_key not in caplog.text
    assert TO not in str(info.value)


def test_official_sdk_against_the_emulator(emu: SendgridHandle) -> None:
    pytest.importorskip("sendgrid")
    from python_http_client.exceptions import UnauthorizedError
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import Mail

    emu.reset()
    mail = Mail(from_email="no-reply@herald.local", to_emails=TO, subject="Hi", plain_text_content="Hello")
    response = SendGridAPIClient(emu.api_key, host=emu.url).send(mail)
    assert response.status_code == 202 and response.headers["X-Message-Id"]
    assert emu.received[-1]["body"]["personalizations"][0]["to"][0]["email"] == TO
    with pytest.raises(UnauthorizedError):
        SendGridAPIClient("SG.wrong", host=emu.url).send(mail)


async def test_email_fakes_env_drives_all_three_registered_drivers() -> None:
    from drivers import create_driver
    from drivers.fakes.email import start_email_fakes

    fakes, env = start_email_fakes()
    try:
        for provider in ("ses", "sendgrid", "smtp"):
            async with create_driver(Channel.EMAIL, provider, env) as driver:
                result = await driver.send_one(msg())
            assert result.ok and result.provider == provider and result.provider_message_id
        assert len(fakes.sendgrid.received) == 1 and len(fakes.smtp.messages) == 1
    finally:
        fakes.stop()
