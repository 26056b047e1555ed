"""A tenant's own provider settings are merged onto the platform's endpoints, never its credentials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from drivers import create_driver
from engine.channels import Channel
from engine.credentials import CredentialBox, TenantDrivers, without_platform_secrets
from engine.errors import ConfigurationError

PLATFORM = {
    "HERALD_TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "HERALD_TWILIO_AUTH_TOKEN": "platform-auth-token",
    "HERALD_TWILIO_BASE_URL": "https://twilio.internal",
    "HERALD_TWILIO_FROM": "+14155550100",
    "HERALD_SENDGRID_API_KEY": "SG.platform-key",
    "HERALD_SENDGRID_BASE_URL": "https://sendgrid.internal",
    "HERALD_META_APP_SECRET": "platform-app-secret",
    "HERALD_FCM_TOKEN_URI": "https://oauth.internal/token",
    "AWS_ACCESS_KEY_ID": "AKIAPLATFORM",
    "AWS_SECRET_ACCESS_KEY": "platform-aws-secret",
    "AWS_REGION": "eu-west-1",
    "HERALD_PUBLIC_URL": "https://herald.example",
}


def test_the_platforms_credentials_are_left_out_its_endpoints_kept() -> None:
    kept = without_platform_secrets(PLATFORM)
    assert not {v for v in kept.values()} & {
        "platform-auth-token",
        "SG.platform-key",
        "platform-app-secret",
        "platform-aws-secret",
        "AKIAPLATFORM",
        PLATFORM["HERALD_TWILIO_ACCOUNT_SID"],
    }
    for name in ("HERALD_TWILIO_BASE_URL", "HERALD_SENDGRID_BASE_URL", "HERALD_FCM_TOKEN_URI", "AWS_REGION"):
        assert kept[name] == PLATFORM[name]


def test_a_tenant_naming_only_a_base_url_gets_none_of_the_platforms_credentials() -> None:
    seen: list[Mapping[str, str]] = []

    def factory(channel: Channel, provider: str, env: Mapping[str, str]) -> Any:
        seen.append(dict(env))
        return create_driver(channel, provider, env)

    drivers = TenantDrivers(CredentialBox("s" * 32), PLATFORM, factory)
    with pytest.raises(ConfigurationError) as missing:  # before: built, and sent the platform's SID and token
        drivers.build(Channel.SMS, "twilio", {"HERALD_TWILIO_BASE_URL": "http://attacker.example"})
    assert "HERALD_TWILIO_ACCOUNT_SID" in str(missing.value) or "HERALD_TWILIO_AUTH_TOKEN" in str(missing.value)
    assert (
        "platform-auth-token" not in seen[0].values() and PLATFORM["HERALD_TWILIO_ACCOUNT_SID"] not in seen[0].values()
    )
    with pytest.raises(ConfigurationError):
        drivers.build(Channel.EMAIL, "sendgrid", {"HERALD_SENDGRID_BASE_URL": "http://attacker.example"})
    own = {"HERALD_TWILIO_ACCOUNT_SID": "AC" + "2" * 32, "HERALD_TWILIO_AUTH_TOKEN": "tenant-token"}
    drivers.build(Channel.SMS, "twilio", own)  # its own account, on the platform's endpoint
    assert seen[-1]["HERALD_TWILIO_BASE_URL"] == "https://twilio.internal"
    assert seen[-1]["HERALD_TWILIO_AUTH_TOKEN"] == "tenant-token"
