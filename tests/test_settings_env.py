"""Settings as a deployment sets them: variables in the real environment of a ``herald`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine.errors import ConfigurationError
from engine.settings import Settings, _describe, load_settings

HERALD = str(Path(sys.executable).with_name("herald"))
#: Herald's variables that do not start with HERALD_ (DATABASE_URL...).
OWN_VARIABLES = {f.alias for f in Settings.model_fields.values() if f.alias}


def herald_config(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``herald config`` with only ``variables`` set among Herald's own (the rest of the environment kept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_") and k not in OWN_VARIABLES}
    env.update(variables)
    return subprocess.run([HERALD, "config", *args], env=env, capture_output=True, text=True, timeout=60)


def printed(out: str) -> dict[str, str]:
    """``NAME=value`` lines set from the environment (not marked ``# default``)."""
    lines = [line for line in out.splitlines() if "=" in line and not line.rstrip().endswith("# default")]
    return dict(line.split("=", 1) for line in lines)


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("HERALD_EMAIL_PROVIDERS", "sendgrid", "sendgrid"),
        ("HERALD_EMAIL_PROVIDERS", "ses,sendgrid", "ses,sendgrid"),
        ("HERALD_EMAIL_PROVIDERS", " ses , sendgrid,smtp ", "ses,sendgrid,smtp"),
        ("HERALD_SMS_PROVIDERS", "twilio,sns", "twilio,sns"),
        ("HERALD_SMS_PROVIDERS", "sns", "sns"),
        ("HERALD_PUSH_PROVIDERS", "fcm,apns", "fcm,apns"),
        ("HERALD_PUSH_PROVIDERS", "apns", "apns"),
        ("HERALD_WHATSAPP_PROVIDERS", "meta,twilio", "meta,twilio"),
        ("HERALD_WHATSAPP_PROVIDERS", "meta", "meta"),
        ("HERALD_INAPP_PROVIDERS", "store", "store"),
        ("HERALD_TENANT_EDITABLE_KEYS", "default_locale,providers.email", "default_locale,providers.email"),
        ("HERALD_RETRY_DELAYS", "1,2,3", "1,2,3"),
        ("HERALD_RETRY_DELAYS", "0.5, 30", "0.5,30"),
        ("HERALD_RETRY_DELAYS", "5", "5"),
    ],
)
def test_list_settings_parse_from_the_process_environment(variable: str, value: str, shown: str) -> None:
    result = herald_config(**{variable: value})
    assert result.returncode == 0, result.stderr
    assert printed(result.stdout)[variable] == shown


def test_every_list_setting_at_once_passes_the_check() -> None:
    result = herald_config(
        "--check",
        HERALD_EMAIL_PROVIDERS="ses,sendgrid,smtp",
        HERALD_SMS_PROVIDERS="twilio,sns",
        HERALD_PUSH_PROVIDERS="fcm,apns",
        HERALD_WHATSAPP_PROVIDERS="meta,twilio",
        HERALD_INAPP_PROVIDERS="store",
        HERALD_RETRY_DELAYS="1,2,3",
    )
    assert (result.returncode, result.stdout.strip()) == (0, "configuration ok"), result.stderr


def test_an_empty_variable_means_the_default() -> None:
    result = herald_config(HERALD_EMAIL_PROVIDERS="", HERALD_HTTP_PORT="")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("HERALD_EMAIL_PROVIDERS=console ") and line.endswith("# default") for line in lines)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("HERALD_RETRY_DELAYS", "1,x,3", "HERALD_RETRY_DELAYS='1,x,3' (item 2)"),
        ("HERALD_HTTP_PORT", "eighty", "HERALD_HTTP_PORT='eighty'"),
        ("HERALD_SENDERS", "0", "HERALD_SENDERS='0'"),
        ("HERALD_LINK_TRACKING", "maybe", "HERALD_LINK_TRACKING='maybe'"),
        ("HERALD_JWT_SECRET", "too-short-a-key", "HERALD_JWT_SECRET='***': String should have at least 32"),
    ],
)
def test_a_bad_value_stops_naming_the_variable(variable: str, value: str, says: str) -> None:
    for args in ((), ("--check",)):
        result = herald_config(*args, **{variable: value})
        assert result.returncode == 2
        assert says in result.stderr and "?=" not in result.stderr
        assert "Traceback" not in result.stderr
        if variable == "HERALD_JWT_SECRET":
            assert value not in result.stdout + result.stderr


def test_secrets_and_passwords_are_masked() -> None:
    result = herald_config(
        DATABASE_URL="postgresql://herald:pg-pass-1234@db.internal:5432/herald",
        AMQP_URL="amqp://guest:mq-pass-5678@mq.internal:5672/",
        HERALD_JWT_SECRET="jwt-secret-abcdefgh-0123456789-0123456789",
        HERALD_CREDENTIALS_KEY="credentials-key-ijkl",
    )
    assert result.returncode == 0, result.stderr
    shown = printed(result.stdout)
    assert shown["DATABASE_URL"] == "postgresql://herald:***@db.internal:5432/herald"
    assert shown["AMQP_URL"] == "amqp://guest:***@mq.internal:5672/"
    assert shown["HERALD_JWT_SECRET"] == shown["HERALD_CREDENTIALS_KEY"] == "***"
    for secret in ("pg-pass-1234", "mq-pass-5678", "jwt-secret-abcdefgh-0123456789-0123456789", "credentials-key-ijkl"):
        assert secret not in result.stdout + result.stderr


def test_a_given_mapping_is_read_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SENDERS", "not-a-number")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    settings = load_settings({"HERALD_EMAIL_PROVIDERS": "ses,sendgrid"})
    assert settings.senders == 1 and settings.database_url is None
    assert settings.email_providers == ("ses", "sendgrid")


def test_a_check_across_settings_still_names_something() -> None:
    error = PydanticCustomError("value_error", "HERALD_SENDERS must be below HERALD_SENDER_PREFETCH")
    details: list[InitErrorDetails] = [{"type": error, "loc": (), "input": {}}]
    message = _describe(ValidationError.from_exception_data("Settings", details), {})
    assert "?=" not in message and "HERALD_SENDERS must be below" in message
    with pytest.raises(ConfigurationError, match=r"HERALD_HTTP_PORT='0'"):
        load_settings({"HERALD_HTTP_PORT": "0"})
