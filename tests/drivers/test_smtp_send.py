"""SmtpDriver's SMTP specifics against the aiosmtpd emulator, with and without DKIM. The failure classes,
transport errors, outages and log redaction are in the contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.email.smtp import SmtpDriver
from drivers.fakes.smtp import DKIM_DOMAIN, DKIM_SELECTOR, SmtpHandle, make_dkim_key
from engine.delivery import Attachment
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    PermanentError,
    ProviderDownError,
    RetryableError,
)
from tests.drivers.emails import TO, UNSUB, msg


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    return make_dkim_key(tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def emu(smtp: SmtpHandle, dkim_key: tuple[Path, bytes]) -> SmtpHandle:
    smtp.state.dkim_txt = dkim_key[1]  # the emulator's "DNS" serves this public key
    return smtp


@pytest.fixture
def driver(emu: SmtpHandle) -> SmtpDriver:
    return SmtpDriver.from_env(emu.env())


async def test_success_with_message_id_and_alternative(driver: SmtpDriver, emu: SmtpHandle) -> None:
    result = await driver.send_one(msg())
    assert result.ok and result.provider == "smtp" and result.provider_message_id
    [mail] = emu.messages
    assert mail.rcpt_tos == [TO] and mail.mail_from == "no-reply@herald.local"
    assert mail.message["Message-ID"].strip("<>") == result.provider_message_id
    assert mail.message.get_content_type() == "multipart/alternative"
    assert not mail.dkim_signed


async def test_custom_headers_and_attachment(driver: SmtpDriver, emu: SmtpHandle) -> None:
    attachment = Attachment("invoice.pdf", "application/pdf", data=b"%PDF-1.4 fake")
    assert (await driver.send_one(msg(headers=UNSUB, attachments=(attachment,)))).ok
    message = emu.messages[0].message
    assert message["List-Unsubscribe"] == UNSUB["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == UNSUB["List-Unsubscribe-Post"]
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "invoice.pdf" and part.get_content() == b"%PDF-1.4 fake"


async def test_dkim_signature_verifies(emu: SmtpHandle, dkim_key: tuple[Path, bytes]) -> None:
    env = emu.env() | {
        "HERALD_DKIM_PRIVATE_KEY_FILE": str(dkim_key[0]),
        "HERALD_DKIM_SELECTOR": DKIM_SELECTOR,
        "HERALD_DKIM_DOMAIN": DKIM_DOMAIN,
    }
    assert (await SmtpDriver.from_env(env).send_one(msg(headers=UNSUB))).ok
    [mail] = emu.messages
    assert mail.dkim_signed and mail.dkim_valid
    assert b"list-unsubscribe" in mail.message["DKIM-Signature"].encode().lower()


def test_partial_dkim_settings_name_the_missing_variable() -> None:
    with pytest.raises(ConfigurationError, match="HERALD_DKIM_DOMAIN"):
        SmtpDriver.from_env({"HERALD_SMTP_HOST": "x", "HERALD_DKIM_SELECTOR": "s", "HERALD_DKIM_PRIVATE_KEY_FILE": "k"})


@pytest.mark.parametrize("reply", ["550 5.1.1 No such user", "551 5.1.6 User not local", "553 5.1.3 Bad address"])
async def test_refused_recipient_is_bad_recipient(driver: SmtpDriver, emu: SmtpHandle, reply: str) -> None:
    emu.refuse(TO, reply)
    with pytest.raises(BadRecipientError) as info:
        await driver.send_one(msg())
    assert info.value.status_code == int(reply[:3])
    assert TO not in str(info.value)


@pytest.mark.parametrize(
    "reply",
    ["421 4.3.2 Shutting down", "450 4.2.1 Mailbox busy", "451 4.3.0 Try later", "452 4.3.1 Insufficient storage"],
)
async def test_transient_replies_are_retryable(driver: SmtpDriver, emu: SmtpHandle, reply: str) -> None:
    emu.fail("RCPT", reply)
    with pytest.raises(RetryableError) as info:
        await driver.send_one(msg())
    assert info.value.status_code == int(reply[:3])


async def test_password_the_server_refuses_is_provider_down(emu: SmtpHandle) -> None:
    driver = SmtpDriver.from_env(emu.env() | {"HERALD_SMTP_PASSWORD": "wrong"})
    with pytest.raises(ProviderDownError) as info:
        await driver.send_one(msg())
    assert info.value.status_code == 535
    results = await driver.send_batch([msg(1), msg(2)])
    assert all(r.provider_down for r in results) and emu.messages == []


async def test_batch_with_partial_failure(driver: SmtpDriver, emu: SmtpHandle) -> None:
    emu.refuse("gone@example.com")
    results = await driver.send_batch([msg(1), msg(2, to="gone@example.com"), msg(3), msg(4, to="bad@@")])
    assert [r.ok for r in results] == [True, False, True, False]
    assert isinstance(results[1].error, BadRecipientError) and isinstance(results[3].error, BadRecipientError)
    assert len(emu.messages) == 2


async def test_header_injection_is_permanent(driver: SmtpDriver, emu: SmtpHandle) -> None:
    results = await driver.send_batch([msg(1, headers={"X-Evil": "a\r\nBcc: victim@example.com"}), msg(2)])
    assert isinstance(results[0].error, PermanentError) and results[1].ok
    assert len(emu.messages) == 1


def test_unparsable_dkim_key_is_a_configuration_error(tmp_path: Path) -> None:
    key = tmp_path / "bad.pem"
    key.write_text("not a key")
    env = {
        "HERALD_SMTP_HOST": "x",
        "HERALD_DKIM_PRIVATE_KEY_FILE": str(key),
        "HERALD_DKIM_SELECTOR": "s",
        "HERALD_DKIM_DOMAIN": "d.example",
    }
    with pytest.raises(ConfigurationError, match="HERALD_DKIM_PRIVATE_KEY_FILE"):
        SmtpDriver.from_env(env)
