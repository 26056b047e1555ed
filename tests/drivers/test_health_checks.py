"""The drivers' health checks (the driver port's optional ``check_health``) against their emulators: a
healthy account passes and sends nothing; a refused key, a suspended account, paused sending, a blocked
number, a 5xx and an unreachable server fail with the class a send would get. Console and sink have no
check."""

from __future__ import annotations

import socket

import pytest

from drivers import create_driver
from drivers.email.sendgrid import SendgridDriver
from drivers.email.ses import SesDriver
from drivers.email.smtp import SmtpDriver
from drivers.fakes import AllFakes
from drivers.fakes.aws import AwsHandle
from drivers.fakes.meta import PHONE_NUMBER_ID, VERIFIED_NAME, MetaEmulator
from drivers.fakes.sendgrid import SendgridEmulator
from drivers.fakes.smtp import SmtpHandle
from drivers.fakes.twilio import TwilioEmulator
from drivers.sms.sns import SnsDriver
from drivers.sms.twilio import TwilioSmsDriver
from drivers.whatsapp.meta import MetaWhatsappDriver
from drivers.whatsapp.twilio import TwilioWhatsappDriver
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage, health_checked
from engine.errors import PermanentError, ProviderDownError, RetryableError, ThrottledError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("channel", "provider"),
    [(Channel.EMAIL, "console"), (Channel.SMS, "console"), (Channel.EMAIL, "sink"), (Channel.SMS, "sink")],
)
def test_console_and_sink_have_no_health_check(
    channel: Channel, provider: str, env: dict[str, str], tmp_path: object
) -> None:
    driver = create_driver(channel, provider, {**env, "HERALD_DATA_DIR": str(tmp_path)})
    assert health_checked(driver) is None


async def test_sendgrid_checks_its_keys_scopes(env: dict[str, str], sendgrid_emu: SendgridEmulator) -> None:
    async with SendgridDriver.from_env(env) as driver:
        assert health_checked(driver) is driver
        await driver.check_health()
        assert [(r.method, r.path) for r in sendgrid_emu.received] == [("GET", "/v3/scopes")]
        sendgrid_emu.control({"scopes": ["user.profile.read"]})
        with pytest.raises(ProviderDownError, match=r"mail\.send"):
            await driver.check_health()
        sendgrid_emu.reset_state()
        sendgrid_emu.fail(503, {"errors": [{"message": "Service Unavailable"}]}, path="/v3/scopes")
        with pytest.raises(RetryableError) as failed:
            await driver.check_health()
        assert failed.value.code == "503"
        await driver.check_health()  # the fault was for one request
    async with SendgridDriver.from_env({**env, "HERALD_SENDGRID_API_KEY": "SG.revoked"}) as driver:
        with pytest.raises(ProviderDownError):
            await driver.check_health()
    async with SendgridDriver.from_env({**env, "HERALD_SENDGRID_BASE_URL": f"http://127.0.0.1:{closed_port()}"}) as d:
        with pytest.raises(ProviderDownError) as unreachable:
            await d.check_health()
        assert unreachable.value.code == "connect"


@pytest.mark.parametrize("kind", [TwilioSmsDriver, TwilioWhatsappDriver])
async def test_twilio_checks_that_its_account_is_active(
    kind: type[TwilioSmsDriver] | type[TwilioWhatsappDriver], env: dict[str, str], twilio_emu: TwilioEmulator
) -> None:
    driver = kind.from_env(env)
    try:
        await driver.check_health()
        (seen,) = twilio_emu.received
        assert seen.method == "GET" and seen.path.endswith(f"/Accounts/{env['HERALD_TWILIO_ACCOUNT_SID']}.json")
        twilio_emu.control({"account_status": "suspended"})
        with pytest.raises(ProviderDownError, match="suspended"):
            await driver.check_health()
        twilio_emu.control({"account_status": "active"})
        twilio_emu.fail(500, {"code": 20500, "message": "Internal Server Error"}, path="/Accounts/", count=1)
        with pytest.raises(RetryableError):
            await driver.check_health()
        await driver.check_health()
    finally:
        await driver.aclose()
    wrong = kind.from_env({**env, "HERALD_TWILIO_AUTH_TOKEN": "wrong"})
    try:
        with pytest.raises(ProviderDownError) as refused:
            await wrong.check_health()
        assert refused.value.code == "20003"
    finally:
        await wrong.aclose()


async def test_a_suspended_twilio_account_refuses_sends_too(env: dict[str, str], twilio_emu: TwilioEmulator) -> None:
    twilio_emu.control({"account_status": "suspended"})
    message = OutboundMessage(
        message_id="msg_0001",
        tenant="acme",
        channel=Channel.SMS,
        to=Address(phone="+447400123456"),
        content=Content(text="Your code is 123456"),
    )
    async with TwilioSmsDriver.from_env(env) as driver:
        (result,) = await driver.send_batch([message])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "20005"


async def test_ses_checks_that_sending_is_enabled(env: dict[str, str], aws: AwsHandle) -> None:
    sent_before = len(aws.sent_ses())
    async with SesDriver.from_env(env) as driver:
        await driver.check_health()
        assert [r.path for r in aws.proxy.received] == ["/v2/email/account"]
        aws.proxy.control({"ses_sending_enabled": False})
        with pytest.raises(ProviderDownError, match="paused"):
            await driver.check_health()
        aws.proxy.control({"ses_sending_enabled": True})
        aws.fail("ServiceUnavailable", 503, "Service Unavailable", path="/v2/email/account")
        with pytest.raises(RetryableError):
            await driver.check_health()
        await driver.check_health()
        assert len(aws.sent_ses()) == sent_before  # a check sends nothing


async def test_smtp_logs_in_and_sends_noop(env: dict[str, str], smtp: SmtpHandle) -> None:
    driver = SmtpDriver.from_env(env)
    assert health_checked(driver) is driver
    await driver.check_health()
    assert (smtp.noops, smtp.transactions, smtp.messages) == (1, 0, [])  # a check sends nothing
    smtp.fail("NOOP", "421 4.3.2 Service not available, closing transmission channel")
    with pytest.raises(RetryableError) as busy:
        await driver.check_health()
    assert busy.value.code == "421"
    smtp.fail("NOOP", "554 5.3.2 System not accepting network messages")
    with pytest.raises(ProviderDownError) as refused:
        await driver.check_health()
    assert refused.value.code == "554"
    await driver.check_health()  # each fault was for one command
    with pytest.raises(ProviderDownError) as login:
        await SmtpDriver.from_env({**env, "HERALD_SMTP_PASSWORD": "wrong"}).check_health()
    assert login.value.code == "535"
    with pytest.raises(ProviderDownError) as unreachable:
        await SmtpDriver.from_env({**env, "HERALD_SMTP_PORT": str(closed_port())}).check_health()
    assert unreachable.value.code == "connect"
    assert smtp.transactions == 0


async def test_sns_reads_its_sms_attributes(env: dict[str, str], aws: AwsHandle) -> None:
    sent_before = len(aws.sent_sms())
    async with SnsDriver.from_env(env) as driver:
        assert health_checked(driver) is driver
        await driver.check_health()
        (seen,) = aws.proxy.received
        assert seen.method == "POST" and seen.body["Action"] == "GetSMSAttributes"
        aws.fail("AuthorizationError", 403, "User is not authorized to perform: SNS:GetSMSAttributes")
        with pytest.raises(ProviderDownError) as denied:
            await driver.check_health()
        assert denied.value.code == "AuthorizationError"
        aws.fail("Throttling", 400, "Rate exceeded")
        with pytest.raises(ThrottledError):
            await driver.check_health()
        aws.fail("InternalError", 500, "Internal Error")
        with pytest.raises(RetryableError):
            await driver.check_health()
        await driver.check_health()
        assert len(aws.sent_sms()) == sent_before  # a check sends nothing
    async with SnsDriver.from_env({**env, "HERALD_SNS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}) as down:
        with pytest.raises(ProviderDownError) as unreachable:
            await down.check_health()
        assert unreachable.value.code == "connect"


async def test_meta_reads_its_numbers_messaging_health(env: dict[str, str], meta_emu: MetaEmulator) -> None:
    async with MetaWhatsappDriver.from_env(env) as driver:
        assert health_checked(driver) is driver
        await driver.check_health()
        (seen,) = meta_emu.received
        assert (seen.method, seen.path) == ("GET", f"/v23.0/{PHONE_NUMBER_ID}")
        meta_emu.control({"can_send_message": "LIMITED", "quality_rating": "YELLOW"})
        await driver.check_health()  # limited still sends
        meta_emu.control({"can_send_message": "BLOCKED"})
        with pytest.raises(ProviderDownError, match="PHONE_NUMBER") as blocked:
            await driver.check_health()
        assert blocked.value.code == "131031"
        meta_emu.reset_state()
        meta_emu.fail(500, {"error": {"code": 2, "message": "Service temporarily unavailable"}}, path=PHONE_NUMBER_ID)
        with pytest.raises(RetryableError) as unavailable:
            await driver.check_health()
        assert unavailable.value.code == "2"
        await driver.check_health()
        assert all(r.method == "GET" for r in meta_emu.received)  # a check sends nothing
    async with MetaWhatsappDriver.from_env({**env, "HERALD_META_TOKEN": "revoked"}) as driver:
        with pytest.raises(ProviderDownError) as refused:
            await driver.check_health()
        assert refused.value.code == "190"
    async with MetaWhatsappDriver.from_env({**env, "HERALD_META_PHONE_NUMBER_ID": "999"}) as driver:
        with pytest.raises(PermanentError) as unknown:
            await driver.check_health()
        assert unknown.value.code == "100"  # as a send to that number id is
    async with MetaWhatsappDriver.from_env({**env, "HERALD_META_BASE_URL": f"http://127.0.0.1:{closed_port()}"}) as d:
        with pytest.raises(ProviderDownError) as unreachable:
            await d.check_health()
        assert unreachable.value.code == "connect"


def test_the_meta_emulator_answers_the_fields_asked_for(meta_emu: MetaEmulator) -> None:
    """Graph's node read: the fields asked for and ``id``, else its default fields; an unknown one is 100."""
    auth = f"Bearer {meta_emu.api.state.token}"
    path = f"/v23.0/{PHONE_NUMBER_ID}"
    status, doc = meta_emu.api.phone_number(path, auth, "verified_name,quality_rating")
    assert status == 200 and doc == {"verified_name": VERIFIED_NAME, "quality_rating": "GREEN", "id": PHONE_NUMBER_ID}
    status, doc = meta_emu.api.phone_number(path, auth, None)
    assert status == 200 and "health_status" not in doc and doc["platform_type"] == "CLOUD_API"
    status, doc = meta_emu.api.phone_number(path, auth, "verified_name,nonsense")
    assert (status, doc["error"]["code"]) == (400, 100)
    status, doc = meta_emu.api.phone_number(path, "Bearer wrong", "verified_name")
    assert (status, doc["error"]["code"]) == (401, 190)


def test_every_configured_emulator_answers_a_check(fakes: AllFakes) -> None:
    """The emulators a stack runs with answer the checks of the drivers that have one."""
    import asyncio

    async def run() -> None:
        for kind in (SendgridDriver, SesDriver, SmtpDriver, TwilioSmsDriver, SnsDriver, MetaWhatsappDriver):
            async with kind.from_env(fakes.env) as driver:  # type: ignore[attr-defined]
                await driver.check_health()

    fakes.reset()
    asyncio.run(run())
