"""SnsDriver's SNS specifics against moto's SNS behind the fault-injecting proxy (the Query protocol's XML
errors). The failure classes, transport errors, outages and log redaction are in the contract suite."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import pytest

from drivers import create_driver
from drivers.fakes.aws import AwsHandle
from drivers.phone import SmsSendResult
from drivers.sms.sns import SnsDriver
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import ConfigurationError, FailureClass, RetryableError

NUMBER = "+14155552671"
CREDS = {"AWS_ACCESS_KEY_ID": "AKIDHERALDTEST", "AWS_SECRET_ACCESS_KEY": "herald-test-secret-key-0001"}


def sms(i: int, to: str = NUMBER, text: str = "Your code is 998877", **kw: Any) -> OutboundMessage:
    return OutboundMessage(f"msg_{i}", "t_001", Channel.SMS, Address(phone=to), Content(text=text), **kw)


@pytest.fixture
def env(aws: AwsHandle) -> dict[str, str]:
    return aws.env() | CREDS


async def test_publish_to_moto(env: dict[str, str], aws: AwsHandle) -> None:
    async with SnsDriver.from_env(env) as drv:
        results = await drv.send_batch([sms(1), sms(2, text="Код подтверждения: 998877. " * 3)])
    assert all(isinstance(r, SmsSendResult) and r.ok for r in results)
    first, second = results
    assert isinstance(first, SmsSendResult) and isinstance(second, SmsSendResult)
    assert (first.encoding, first.segments, first.country) == ("GSM-7", 1, "US")
    assert (second.encoding, second.segments) == ("UCS-2", 2)
    assert first.cost_usd is None and second.cost_usd is None  # prices live in the routing table
    assert aws.sent_sms()[first.provider_message_id or ""] == (NUMBER, "Your code is 998877")


async def test_wire_attributes(env: dict[str, str], aws: AwsHandle) -> None:
    env |= {"HERALD_SNS_SENDER_ID": "ACME", "HERALD_SNS_MAX_PRICE": "0.50"}
    async with SnsDriver.from_env(env) as drv:
        results = await drv.send_batch(
            [sms(1), sms(2, category="marketing"), sms(3, sender="+14155550100", extra={"sms_type": "Promotional"})]
        )
    assert all(r.ok for r in results)

    def attributes(form: dict[str, str]) -> dict[str, str]:
        names = {k.rsplit(".", 1)[0]: v for k, v in form.items() if k.endswith(".Name")}
        return {v: form[f"{k}.Value.StringValue"] for k, v in names.items()}

    sets = sorted((attributes(r.body) for r in aws.proxy.received), key=lambda a: sorted(a.items()))
    assert {
        "AWS.SNS.SMS.SMSType": "Transactional",
        "AWS.SNS.SMS.SenderID": "ACME",
        "AWS.SNS.SMS.MaxPrice": "0.50",
    } in sets
    assert {
        "AWS.SNS.SMS.SMSType": "Promotional",
        "AWS.SNS.SMS.SenderID": "ACME",
        "AWS.SNS.SMS.MaxPrice": "0.50",
    } in sets
    assert {
        "AWS.SNS.SMS.SMSType": "Promotional",
        "AWS.MM.SMS.OriginationNumber": "+14155550100",
        "AWS.SNS.SMS.MaxPrice": "0.50",
    } in sets
    assert all(urllib.parse.unquote(r.body["Action"]) == "Publish" for r in aws.proxy.received)


async def test_failure_classes_in_one_partial_batch(env: dict[str, str], aws: AwsHandle) -> None:
    aws.fail("OptedOut", 400, "Phone number is opted out")
    async with SnsDriver.from_env(env) as drv:
        results = await drv.send_batch([sms(1), sms(2), sms(3, to="+15558675310"), sms(4, text="")])
    got = sorted(str((r.error.failure_class, r.error.code)) if r.error else "ok" for r in results)
    assert got == sorted(
        [
            "ok",
            str((FailureClass.BAD_RECIPIENT, "OptedOut")),
            str((FailureClass.BAD_RECIPIENT, "invalid_number")),
            str((FailureClass.PERMANENT, "empty_body")),
        ]
    )
    assert aws.proxy.accepted() == 2


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (429, "Throttled", "Rate exceeded", FailureClass.THROTTLED),
        (500, "InternalError", "Internal failure", FailureClass.RETRYABLE),
        (
            400,
            "InvalidParameter",
            "Invalid parameter: PhoneNumber Reason: +1415555 is not valid",
            FailureClass.BAD_RECIPIENT,
        ),
        (400, "InvalidParameter", "Invalid parameter: Message too long", FailureClass.PERMANENT),
    ],
)
async def test_sns_codes(
    env: dict[str, str], aws: AwsHandle, status: int, code: str, message: str, expected: FailureClass
) -> None:
    aws.fail(code, status, message)
    async with SnsDriver.from_env(env) as drv:
        [result] = await drv.send_batch([sms(1)])
    assert result.error is not None and (result.error.failure_class, result.error.code) == (expected, code)
    if expected is FailureClass.THROTTLED:
        assert isinstance(result.error, RetryableError) and result.error.retry_after_s
    assert "1415555" not in result.error.detail
    assert aws.proxy.accepted() == 1  # botocore's own retries are off: the engine owns retrying


def test_settings() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_SNS_REGION"):
        create_driver(Channel.SMS, "sns", {})
    with pytest.raises(ConfigurationError, match="HERALD_SNS_SMS_TYPE"):
        create_driver(Channel.SMS, "sns", {"HERALD_SNS_REGION": "eu-west-1", "HERALD_SNS_SMS_TYPE": "Urgent"})
    driver = create_driver(Channel.SMS, "sns", {"HERALD_SNS_REGION": "eu-west-1", **CREDS})
    assert isinstance(driver, SnsDriver) and CREDS["AWS_SECRET_ACCESS_KEY"] not in repr(driver.settings)


async def test_no_secret_number_or_text_in_logs(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with SnsDriver.from_env(env) as drv:
        results = await drv.send_batch([sms(1), sms(2, to="+1415555267")])
    assert [r.ok for r in results] == [True, False]
    ours = [r for r in caplog.records if r.threadName == "MainThread"]  # not the emulators' threads
    assert any(r.name.startswith("botocore") for r in ours)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours) + repr([r.error for r in results])
    for secret in (CREDS["AWS_SECRET_ACCESS_KEY"], "4155552671", "415555267", "998877"):
        assert secret not in text
