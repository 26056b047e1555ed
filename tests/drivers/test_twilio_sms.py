"""TwilioSmsDriver's Twilio specifics against its emulator (and the twilio SDK against the emulator). The
failure classes, transport errors, outages and log redaction are in the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from drivers import create_driver
from drivers.fakes.twilio import MESSAGING_SERVICE_SID, TwilioEmulator
from drivers.phone import SmsSendResult
from drivers.sms.twilio import TwilioSmsDriver
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import ConfigurationError, FailureClass, ProviderDownError

OK_NUMBER = "+14155552671"
OTHER_NUMBER = "+14155552672"


def sms(i: int, to: str = OK_NUMBER, text: str = "Your code is 123456", **kw: object) -> OutboundMessage:
    return OutboundMessage(f"msg_{i}", "t_001", Channel.SMS, Address(phone=to), Content(text=text), **kw)  # type: ignore[arg-type]


@pytest.fixture
def emu(twilio_emu: TwilioEmulator) -> TwilioEmulator:
    return twilio_emu


@pytest.fixture
async def driver(env: dict[str, str]) -> AsyncIterator[TwilioSmsDriver]:
    async with TwilioSmsDriver.from_env(env) as drv:
        yield drv


async def test_success_carries_sid_encoding_segments_country_and_cost(
    driver: TwilioSmsDriver, emu: TwilioEmulator, env: dict[str, str]
) -> None:
    [result] = await driver.send_batch([sms(1)])
    assert isinstance(result, SmsSendResult) and result.ok
    assert result.provider == "twilio" and (result.provider_message_id or "").startswith("SM")
    assert (result.encoding, result.segments, result.country) == ("GSM-7", 1, "US")
    assert result.cost_usd is None  # prices live in the routing table
    [request] = emu.received
    assert request.body == {"To": OK_NUMBER, "From": env["HERALD_TWILIO_FROM"], "Body": "Your code is 123456"}
    assert request.headers["authorization"] == "***"  # the recorder masks it; the emulator checked it


async def test_unicode_multipart_counts_ucs2_segments(driver: TwilioSmsDriver) -> None:
    [result] = await driver.send_batch([sms(1, text="Ваш код 123456. " * 6)])
    assert isinstance(result, SmsSendResult)
    assert (result.encoding, result.segments) == ("UCS-2", 2)


async def test_sender_override_messaging_service_ttl_and_status_callback(
    env: dict[str, str], emu: TwilioEmulator
) -> None:
    # A fixed callback wins over the one under HERALD_PUBLIC_URL (a closed local port: the emulator's
    # callbacks to it go nowhere).
    env["HERALD_TWILIO_STATUS_CALLBACK"] = "http://127.0.0.1:9/webhooks/sms/twilio"
    env["HERALD_PUBLIC_URL"] = "http://127.0.0.1:9"
    async with TwilioSmsDriver.from_env(env) as drv:
        [result] = await drv.send_batch([sms(1, sender=MESSAGING_SERVICE_SID, ttl_seconds=600)])
    assert result.ok
    body = emu.received[0].body
    assert body["MessagingServiceSid"] == MESSAGING_SERVICE_SID and "From" not in body
    assert body["ValidityPeriod"] == "600"
    assert body["StatusCallback"] == "http://127.0.0.1:9/webhooks/sms/twilio"


async def test_failure_classes_in_one_partial_batch(driver: TwilioSmsDriver, emu: TwilioEmulator) -> None:
    emu.control({"opted_out": [OTHER_NUMBER], "landlines": ["+14155552673"]})
    results = await driver.send_batch(
        [
            sms(1),
            sms(2, to=OTHER_NUMBER),
            sms(3, to="+14155552673"),
            sms(4, to="+15558675310"),
            sms(5, text=" "),
        ]
    )
    assert [r.ok for r in results] == [True, False, False, False, False]
    classes = [r.error.failure_class if r.error else None for r in results]
    assert classes[1:] == [
        FailureClass.BAD_RECIPIENT,
        FailureClass.BAD_RECIPIENT,
        FailureClass.BAD_RECIPIENT,
        FailureClass.PERMANENT,
    ]
    codes = [r.error.code if r.error else None for r in results]
    assert codes[1:] == ["21610", "21614", "invalid_number", "empty_body"]
    # the invalid number and the empty body never reached Twilio
    assert len(emu.received) == 3


async def test_invalid_to_reported_by_twilio(driver: TwilioSmsDriver, emu: TwilioEmulator) -> None:
    emu.fail(
        400,
        {
            "code": 21211,
            "message": f"The 'To' number {OK_NUMBER} is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400,
        },
    )
    [result] = await driver.send_batch([sms(1)])
    assert result.error is not None and result.error.failure_class is FailureClass.BAD_RECIPIENT
    assert result.error.code == "21211" and "4155552671" not in result.error.detail


async def test_credentials_the_emulator_refuses_are_provider_down(env: dict[str, str]) -> None:
    env["HERALD_TWILIO_AUTH_TOKEN"] = "wrong-token"
    async with TwilioSmsDriver.from_env(env) as drv:
        results = await drv.send_batch([sms(1), sms(2)])
    assert all(isinstance(r.error, ProviderDownError) for r in results)
    assert results[0].error is not None and (results[0].error.code, results[0].error.status_code) == ("20003", 401)


@pytest.mark.parametrize("missing", ["HERALD_TWILIO_ACCOUNT_SID", "HERALD_TWILIO_AUTH_TOKEN", "HERALD_TWILIO_FROM"])
def test_missing_setting_names_the_variable(env: dict[str, str], missing: str) -> None:
    del env[missing]
    with pytest.raises(ConfigurationError, match=missing):
        create_driver(Channel.SMS, "twilio", env)


def test_registry_builds_it(env: dict[str, str]) -> None:
    assert isinstance(create_driver(Channel.SMS, "twilio", env), TwilioSmsDriver)
    assert env["HERALD_TWILIO_AUTH_TOKEN"] not in repr(TwilioSmsDriver.from_env(env).settings)


def test_twilio_sdk_against_the_emulator(env: dict[str, str], emu: TwilioEmulator) -> None:
    from twilio.base.exceptions import TwilioRestException
    from twilio.rest import Client

    url = env["HERALD_TWILIO_BASE_URL"]
    client = Client(env["HERALD_TWILIO_ACCOUNT_SID"], env["HERALD_TWILIO_AUTH_TOKEN"])
    client.api.base_url = url
    message = client.messages.create(to=OK_NUMBER, from_=env["HERALD_TWILIO_FROM"], body="x" * 200)
    assert message.sid.startswith("SM") and message.status == "queued" and message.num_segments == "2"
    emu.control({"opted_out": [OK_NUMBER]})
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=OK_NUMBER, from_=env["HERALD_TWILIO_FROM"], body="hi")
    assert info.value.code == 21610 and info.value.status == 400
    bad = Client(env["HERALD_TWILIO_ACCOUNT_SID"], "wrong")
    bad.api.base_url = url
    with pytest.raises(TwilioRestException) as auth:
        bad.messages.create(to=OK_NUMBER, from_=env["HERALD_TWILIO_FROM"], body="hi")
    assert auth.value.code == 20003 and auth.value.status == 401


async def test_transport_is_shared_and_closed(env: dict[str, str]) -> None:
    drv = TwilioSmsDriver.from_env(env)
    results = await drv.send_batch([sms(i) for i in range(20)])
    assert all(r.ok for r in results)
    await drv.aclose()
    with pytest.raises(RuntimeError):
        await drv.api._client.post("/")  # closed pool
    assert isinstance(drv.api._client, httpx.AsyncClient)


def test_control_endpoints_over_http(env: dict[str, str]) -> None:
    base = env["HERALD_TWILIO_BASE_URL"]
    path = f"{base}/2010-04-01/Accounts/{env['HERALD_TWILIO_ACCOUNT_SID']}/Messages.json"
    auth = (env["HERALD_TWILIO_ACCOUNT_SID"], env["HERALD_TWILIO_AUTH_TOKEN"])
    form = {"To": OK_NUMBER, "From": env["HERALD_TWILIO_FROM"], "Body": "hi"}
    fault = {
        "status": 503,
        "body": {"code": 20500, "message": "down"},
        "count": 1,
        "latency_ms": 50,
        "headers": {"Retry-After": "2"},
    }
    assert httpx.post(f"{base}/_fault", json=fault).status_code == 200
    first = httpx.post(path, auth=auth, data=form)
    assert (first.status_code, first.headers["retry-after"], first.json()["code"]) == (503, "2", 20500)
    assert httpx.post(path, auth=auth, data=form).status_code == 201
    assert httpx.post(f"{base}/_state", json={"opted_out": [OK_NUMBER]}).json()["opted_out"] == 1
    assert httpx.post(path, auth=auth, data=form).json()["code"] == 21610
    received = httpx.get(f"{base}/_received").json()
    assert [r["body"]["To"] for r in received] == [OK_NUMBER] * 3
    assert httpx.post(f"{base}/_reset").status_code == 200
    assert httpx.get(f"{base}/_received").json() == []
    assert httpx.post(path, auth=auth, data=form).status_code == 201
