"""SnsDriver against moto's SNS server (success, E.164) and an SNS-shaped error emulator (failure classes)."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer
from moto.sns.models import sns_backends

from drivers import create_driver
from drivers.base import Address, Content, OutboundMessage
from drivers.fakes.twilio import Answer, Emulator, Exchange, RunningEmulator
from drivers.phone import SmsSendResult
from drivers.sms.sns import SnsDriver, SnsSettings
from engine.channels import Channel
from engine.errors import ConfigurationError, FailureClass, ProviderDownError, RetryableError

NUMBER = "+14155552671"
ACCOUNT = "123456789012"  # moto's default account
CREDS = {"AWS_ACCESS_KEY_ID": "AKIDHERALDTEST", "AWS_SECRET_ACCESS_KEY": "herald-test-secret-key-0001"}


def sms(i: int, to: str = NUMBER, text: str = "Your code is 998877", **kw: Any) -> OutboundMessage:
    return OutboundMessage(f"msg_{i}", "t_001", Channel.SMS, Address(phone=to), Content(text=text), **kw)


class SnsErrors(Emulator):
    """Answers Publish like SNS (Query protocol, XML); failures are scripted with ``fail``."""

    name = "sns"

    def handle(self, request: Exchange) -> Answer:
        body = (
            '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
            f"<MessageId>{uuid.uuid4()}</MessageId></PublishResult><ResponseMetadata>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></PublishResponse>"
        )
        return 200, {"content-type": "text/xml"}, body.encode()


def aws_error(code: str, message: str, kind: str = "Sender") -> str:
    return (
        f'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>{kind}</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


async def settle() -> None:
    """Driver.send_batch re-raises ProviderDown while sibling sends may still be in flight: let them end."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    if others:
        await asyncio.wait(others, timeout=2)


#: One botocore session for the module: its loaded service models are reused by every driver.
SESSION = get_session()


def sns_driver(env: dict[str, str]) -> SnsDriver:
    return SnsDriver(SnsSettings.from_env(env), session=SESSION)


@pytest.fixture(scope="module")
def moto_env() -> Iterator[dict[str, str]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"HERALD_SNS_REGION": "us-east-1", "HERALD_SNS_ENDPOINT_URL": f"http://{host}:{port}", **CREDS}
    server.stop()


@pytest.fixture(scope="module")
def errors_server() -> Iterator[RunningEmulator]:
    running = RunningEmulator(SnsErrors())
    yield running
    running.stop()


@pytest.fixture
def errors(errors_server: RunningEmulator) -> tuple[Emulator, dict[str, str]]:
    errors_server.emulator.reset()
    env = {"HERALD_SNS_REGION": "us-east-1", "HERALD_SNS_ENDPOINT_URL": errors_server.url, **CREDS}
    return errors_server.emulator, env


def moto_sms() -> dict[str, tuple[str, str]]:
    return dict(sns_backends[ACCOUNT]["us-east-1"].sms_messages)


async def test_publish_to_moto(moto_env: dict[str, str]) -> None:
    async with sns_driver(moto_env) as drv:
        results = await drv.send_batch([sms(1), sms(2, text="Код подтверждения: 998877. " * 3)])
    assert all(isinstance(r, SmsSendResult) and r.ok for r in results)
    first, second = results
    assert isinstance(first, SmsSendResult) and isinstance(second, SmsSendResult)
    assert (first.encoding, first.segments, first.country) == ("GSM-7", 1, "US")
    assert (second.encoding, second.segments) == ("UCS-2", 2)
    assert first.cost_usd is None and second.cost_usd is None  # prices live in the routing table
    stored = moto_sms()
    assert stored[first.provider_message_id or ""] == (NUMBER, "Your code is 998877")


async def test_wire_attributes(errors: tuple[Emulator, dict[str, str]]) -> None:
    emu, env = errors
    env |= {"HERALD_SNS_SENDER_ID": "ACME", "HERALD_SNS_MAX_PRICE": "0.50"}
    async with sns_driver(env) as drv:
        results = await drv.send_batch(
            [sms(1), sms(2, category="marketing"), sms(3, sender="+14155550100", extra={"sms_type": "Promotional"})]
        )
    assert all(r.ok for r in results)

    def attributes(form: dict[str, str]) -> dict[str, str]:
        names = {k.rsplit(".", 1)[0]: v for k, v in form.items() if k.endswith(".Name")}
        return {v: form[f"{k}.Value.StringValue"] for k, v in names.items()}

    sets = sorted((attributes(r.body) for r in emu.received), key=lambda a: sorted(a.items()))
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
    assert all(urllib.parse.unquote(r.body["Action"]) == "Publish" for r in emu.received)


async def test_failure_classes_in_one_partial_batch(errors: tuple[Emulator, dict[str, str]]) -> None:
    emu, env = errors
    emu.fail(400, aws_error("OptedOut", "Phone number is opted out"), count=1, headers={"content-type": "text/xml"})
    async with sns_driver(env) as drv:
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
    assert len(emu.received) == 2


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
    errors: tuple[Emulator, dict[str, str]], status: int, code: str, message: str, expected: FailureClass
) -> None:
    emu, env = errors
    emu.fail(
        status, aws_error(code, message, "Server" if status >= 500 else "Sender"), headers={"content-type": "text/xml"}
    )
    async with sns_driver(env) as drv:
        [result] = await drv.send_batch([sms(1)])
    assert result.error is not None and (result.error.failure_class, result.error.code) == (expected, code)
    if expected is FailureClass.THROTTLED:
        assert isinstance(result.error, RetryableError) and result.error.retry_after_s
    assert "1415555" not in result.error.detail
    assert len(emu.received) == 1  # botocore's own retries are off: the engine owns retrying


async def test_auth_failure_is_provider_down(errors: tuple[Emulator, dict[str, str]]) -> None:
    emu, env = errors
    emu.fail(
        403,
        aws_error("InvalidClientTokenId", "The security token included in the request is invalid."),
        count=5,
        headers={"content-type": "text/xml"},
    )
    async with sns_driver(env) as drv:
        with pytest.raises(ProviderDownError) as info:
            await drv.send_batch([sms(1), sms(2)])
        await settle()
    assert info.value.code == "InvalidClientTokenId"


async def test_unreachable_is_provider_down() -> None:
    env = {"HERALD_SNS_REGION": "us-east-1", "HERALD_SNS_ENDPOINT_URL": "http://127.0.0.1:9", **CREDS}
    async with sns_driver(env) as drv:
        with pytest.raises(ProviderDownError):
            await drv.send_batch([sms(1)])


def test_settings() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_SNS_REGION"):
        create_driver(Channel.SMS, "sns", {})
    with pytest.raises(ConfigurationError, match="HERALD_SNS_SMS_TYPE"):
        create_driver(Channel.SMS, "sns", {"HERALD_SNS_REGION": "eu-west-1", "HERALD_SNS_SMS_TYPE": "Urgent"})
    driver = create_driver(Channel.SMS, "sns", {"HERALD_SNS_REGION": "eu-west-1", **CREDS})
    assert isinstance(driver, SnsDriver) and CREDS["AWS_SECRET_ACCESS_KEY"] not in repr(driver.settings)


async def test_no_secret_number_or_text_in_logs(moto_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with sns_driver(moto_env) as drv:
        results = await drv.send_batch([sms(1), sms(2, to="+1415555267")])
    assert [r.ok for r in results] == [True, False]
    ours = [r for r in caplog.records if not r.threadName.startswith(("fake-", "Thread-"))]
    assert any(r.name.startswith("botocore") for r in ours)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours) + repr([r.error for r in results])
    for secret in (CREDS["AWS_SECRET_ACCESS_KEY"], "4155552671", "415555267", "998877"):
        assert secret not in text
