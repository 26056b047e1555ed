"""SesDriver's SES specifics against moto (SES v2) behind the fault-injecting proxy. The failure classes,
transport errors, outages and log redaction of every driver are in the contract suite."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator

import pytest

from drivers.email.ses import SesDriver
from drivers.fakes.aws import AwsHandle
from engine.delivery import Attachment
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)
from tests.drivers.emails import UNSUB, msg


@pytest.fixture
async def driver(aws: AwsHandle) -> AsyncIterator[SesDriver]:
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


async def test_a_long_unsubscribe_url_goes_as_it_is_not_as_encoded_words(driver: SesDriver, aws: AwsHandle) -> None:
    # A real one: HERALD_PUBLIC_URL + /u/ + a signed token, longer than a header line
    url = "<https://notify.example.com/u/" + "dTIfAbC-_9" * 16 + ">"
    before = len(aws.sent_ses())
    result = await driver.send_one(msg(headers={**UNSUB, "List-Unsubscribe": url}))
    assert result.ok
    [raw] = aws.sent_ses()[before:]
    assert f"\r\nList-Unsubscribe: {url}\r\n" in raw.raw_data  # RFC 2369: the URL itself, never =?utf-8?q?...?=
    assert "=?utf-8?" not in raw.raw_data.split("\r\n\r\n")[0]


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


async def test_batch_with_partial_failure(driver: SesDriver, aws: AwsHandle) -> None:
    results = await driver.send_batch([msg(1), msg(2, to="nobody"), msg(3, sender="x@unverified.example"), msg(4)])
    assert [r.message_id for r in results] == ["msg_0001", "msg_0002", "msg_0003", "msg_0004"]
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, BadRecipientError)
    assert isinstance(results[2].error, PermanentError) and results[2].error.code == "MessageRejected"


def test_missing_region_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_SES_REGION"):
        SesDriver.from_env({})
