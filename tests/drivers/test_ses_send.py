"""SesDriver against moto (SES v2) behind the fault-injecting proxy, over loopback."""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from drivers.base import Address, Attachment, Content, OutboundMessage
from drivers.email.ses import SesDriver
from drivers.fakes.aws import AwsHandle, start_aws
from engine.channels import Channel
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)
from engine.redaction import RedactingFilter

TO = "jane.doe@example.com"
UNSUB = {"List-Unsubscribe": "<https://herald.example/u/abc>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def msg(n: int = 1, to: str = TO, **kw: object) -> OutboundMessage:
    return OutboundMessage(
        message_id=f"msg_{n:04d}",
        tenant="acme",
        channel=Channel.EMAIL,
        to=Address(email=to),
        content=Content(subject="Your order shipped", text="Order #1234 is on its way.", html="<p>Order #1234</p>"),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsHandle]:
    handle = start_aws()
    yield handle
    handle.stop()


@pytest.fixture
async def driver(aws: AwsHandle) -> AsyncIterator[SesDriver]:
    aws.reset()
    async with SesDriver.from_env(aws.env()) as d:
        yield d


async def test_simple_send_returns_message_id(driver: SesDriver, aws: AwsHandle) -> None:
    before = len(aws.sent_ses())
    result = await driver.send_one(msg())
    assert result.ok and result.provider == "ses" and result.provider_message_id
    assert result.cost_usd is None  # prices live in the routing table
    sent = aws.sent_ses()[before:]
    assert len(sent) == 1 and sent[0].id == result.provider_message_id
    assert sent[0].subject == "Your order shipped"


async def test_raw_send_carries_custom_headers_and_attachment(driver: SesDriver, aws: AwsHandle) -> None:
    before = len(aws.sent_ses())
    attachment = Attachment("invoice.pdf", "application/pdf", data=b"%PDF-1.4 fake")
    result = await driver.send_one(msg(headers=UNSUB, attachments=(attachment,)))
    assert result.ok
    [raw] = aws.sent_ses()[before:]
    parsed = email.message_from_string(raw.raw_data, policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == UNSUB["List-Unsubscribe"]
    assert parsed["List-Unsubscribe-Post"] == UNSUB["List-Unsubscribe-Post"]
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["invoice.pdf"]


async def test_unverified_sender_is_rejected_permanently(driver: SesDriver) -> None:
    with pytest.raises(PermanentError) as info:
        await driver.send_one(msg(sender="someone@unverified.example"))
    assert info.value.code == "MessageRejected"


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("TooManyRequestsException", 429, ThrottledError),
        ("Throttling", 400, ThrottledError),
        ("MessageRejected", 400, PermanentError),
        ("AccountSendingPausedException", 400, ProviderDownError),
        ("AccessDenied", 403, ProviderDownError),
        ("InvalidClientTokenId", 403, ProviderDownError),
        ("SignatureDoesNotMatch", 403, ProviderDownError),
        ("MailFromDomainNotVerifiedException", 400, ProviderDownError),
        ("ServiceUnavailable", 503, RetryableError),
        ("InternalFailure", 500, RetryableError),
        ("SomethingNew", 502, RetryableError),
    ],
)
async def test_error_mapping(
    driver: SesDriver, aws: AwsHandle, code: str, status: int, kind: type[DispatchError]
) -> None:
    aws.fail(code, status, "Maximum sending rate exceeded." if "Thrott" in code or "Many" in code else "")
    with pytest.raises(kind) as info:
        await driver.send_one(msg())
    assert type(info.value) is kind and info.value.code == code and info.value.status_code == status
    if isinstance(info.value, ThrottledError):
        assert info.value.retry_after_s


async def test_daily_quota_is_provider_down(driver: SesDriver, aws: AwsHandle) -> None:
    aws.fail("Throttling", 400, "Daily message quota exceeded.")
    with pytest.raises(ProviderDownError):
        await driver.send_one(msg())


async def test_timeout_and_unreachable_are_retryable(aws: AwsHandle) -> None:
    aws.reset()
    aws.fail("", 0, latency_ms=1500)
    async with SesDriver.from_env(aws.env() | {"HERALD_SES_TIMEOUT_S": "0.3"}) as d:
        with pytest.raises(RetryableError) as info:
            await d.send_one(msg())
    assert info.value.code == "timeout"
    async with SesDriver.from_env(aws.env() | {"HERALD_SES_ENDPOINT_URL": "http://127.0.0.1:9"}) as d:
        with pytest.raises(RetryableError) as info:
            await d.send_one(msg())
    assert info.value.code == "connect"


async def test_provider_down_aborts_the_batch(driver: SesDriver, aws: AwsHandle) -> None:
    aws.fail("AccountSendingPausedException", 400, count=5)
    with pytest.raises(ProviderDownError):
        await driver.send_batch([msg(1), msg(2)])


async def test_batch_with_partial_failure(driver: SesDriver, aws: AwsHandle) -> None:
    results = await driver.send_batch([msg(1), msg(2, to="nobody"), msg(3, sender="x@unverified.example"), msg(4)])
    assert [r.message_id for r in results] == ["msg_0001", "msg_0002", "msg_0003", "msg_0004"]
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, BadRecipientError)
    assert isinstance(results[2].error, PermanentError) and results[2].error.code == "MessageRejected"


def test_missing_region_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_SES_REGION"):
        SesDriver.from_env({})


async def test_debug_log_has_no_address_or_secret(
    driver: SesDriver, aws: AwsHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RedactingFilter())
    secret = "testing-secret-key-0001"
    async with SesDriver.from_env(aws.env() | {"AWS_SECRET_ACCESS_KEY": secret}) as d:
        with caplog.at_level(logging.DEBUG):
            assert (await d.send_one(msg(headers=UNSUB))).ok
            assert (await d.send_one(msg(2))).ok
            aws.fail("MessageRejected", 400, f"Email address is not verified: {TO}")
            with pytest.raises(PermanentError) as info:
                await d.send_one(msg(3))
            logging.getLogger("test").debug("failed: %s", info.value)
    assert len(caplog.records) > 5  # botocore does log at DEBUG
    assert TO not in caplog.text and secret not in caplog.text
    assert TO not in str(info.value)
