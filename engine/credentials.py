"""Per-tenant provider credentials: sealed in the tenant's config, opened only where a driver is built.

A tenant can bring its own account for a provider (its SendGrid key, its Twilio sub-account). The values
are encrypted (Fernet, key derived from HERALD_CREDENTIALS_KEY or the signing secret) and stored in
``tenants.config.credentials["<channel>:<provider>"]``; the API shows their names, never their values.
Saving them moves ``tenants.config_version`` (a trigger does), so every sender picks them up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken

from engine.channels import Channel
from engine.delivery import Driver, DriverFactory
from engine.errors import ConfigurationError

if TYPE_CHECKING:
    from engine.tenant_config import TenantConfig

#: Only provider settings may be overridden per tenant.
SETTING_NAME = re.compile(r"^(HERALD|AWS)_[A-Z0-9_]{1,64}$")
#: Set on the settings of a driver built with a tenant's own credentials: the tenant's slug, for the
#: status callback URLs it asks its provider for (the webhook then verifies with the tenant's secret).
WEBHOOK_TENANT_SETTING = "HERALD_WEBHOOK_TENANT"


#: The platform's settings that prove who it is to a provider (keys, tokens, secrets, account ids,
#: passwords, key files): never part of the settings of a driver or receiver built for a tenant.
_SECRET_PART = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|SID|USERNAME|CREDENTIALS)")


def without_platform_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less the platform's provider credentials: what a tenant's own settings are merged onto.

    Merged onto the whole environment, a tenant that set only ``HERALD_TWILIO_BASE_URL`` (or
    ``HERALD_SENDGRID_BASE_URL``) had Herald send the platform's account SID and auth token (API key)
    to the URL it named. Endpoints, regions and timeouts stay: a tenant gives its own credentials.
    """
    return {
        name: value
        for name, value in env.items()
        if name.endswith(("_URL", "_URI"))
        or not (SETTING_NAME.match(name) and _SECRET_PART.search(name.split("_", 1)[1]))
    }


class CredentialBox:
    def __init__(self, secret: str) -> None:
        key = hashlib.sha256(b"herald-credentials\x00" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, values: Mapping[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(dict(values), sort_keys=True).encode()).decode()

    def open(self, token: str) -> dict[str, str]:
        """Raises: ConfigurationError when the token was sealed with another key or altered."""
        try:
            opened: dict[str, str] = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as err:
            raise ConfigurationError("tenant credentials cannot be opened with this key") from err
        return opened


def credentials_key(channel: Channel, provider: str) -> str:
    return f"{channel.value}:{provider}"


def sealed_for(tenant_config: TenantConfig, channel: Channel, provider: str) -> str | None:
    return tenant_config.credentials.get(credentials_key(channel, provider))


class TenantDrivers:
    """Drivers built with a tenant's own credentials, one per (tenant, channel, provider, sealed value).

    ``factory`` builds a driver from settings; the composition root hands in the drivers' registry.
    """

    def __init__(self, box: CredentialBox, base_env: Mapping[str, str], factory: DriverFactory) -> None:
        self.box = box
        self.base_env = without_platform_secrets(base_env)
        self.factory = factory
        self._drivers: dict[tuple[str, Channel, str, str], Driver] = {}

    def build(self, channel: Channel, provider: str, overrides: Mapping[str, str]) -> Driver:
        """Raises: ConfigurationError naming what the merged settings still miss."""
        return self.factory(channel, provider, {**self.base_env, **overrides})

    def driver(self, tenant: str, channel: Channel, provider: str, sealed: str) -> Driver:
        key = (tenant, channel, provider, sealed)
        found = self._drivers.get(key)
        if found is None:
            settings = {**self.box.open(sealed), WEBHOOK_TENANT_SETTING: tenant}
            found = self._drivers[key] = self.build(channel, provider, settings)
        return found

    async def aclose(self) -> None:
        for driver in self._drivers.values():
            await driver.aclose()
        self._drivers.clear()


_SAVE = """
UPDATE tenants
SET config = jsonb_set(
    config, '{credentials}', coalesce(config->'credentials', '{}'::jsonb) || jsonb_build_object($2::text, $3::text)
)
WHERE id = $1
"""


async def save_credentials(
    pool: Any, tenant_id: Any, channel: Channel, provider: str, sealed: str, names: list[str], actor: str
) -> None:
    """Store sealed credentials on the tenant and write an audit record (names only, never values)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SAVE, tenant_id, credentials_key(channel, provider), sealed)
        await conn.execute(
            "INSERT INTO audit_log (tenant_id, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
            tenant_id,
            actor,
            "tenant.credentials",
            credentials_key(channel, provider),
            {"names": sorted(names)},
        )


class TenantCredentials:
    """A tenant brings its own provider account: the settings are checked by building the driver with
    them, then sealed, stored on the tenant and audited (names only)."""

    def __init__(self, drivers: TenantDrivers, pool: Any) -> None:
        self.drivers = drivers
        self.pool = pool

    async def put(
        self, tenant_id: Any, channel: Channel, provider: str, values: Mapping[str, str], actor: str
    ) -> list[str]:
        """Store the settings; returns their names, sorted.

        Raises:
            ConfigurationError: the provider is unknown, or the merged settings still miss something.
        """
        driver = self.drivers.build(channel, provider, values)
        await driver.aclose()
        sealed = self.drivers.box.seal(values)
        await save_credentials(self.pool, tenant_id, channel, provider, sealed, list(values), actor)
        return sorted(values)
