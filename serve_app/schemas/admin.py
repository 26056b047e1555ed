"""``/admin``: health, providers, tenant credentials and queue figures."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from engine.channels import Channel
from engine.lifecycle import QueuesSnapshot, TenantQueuesView

#: Only provider settings may be overridden per tenant (engine.credentials.SETTING_NAME).
SettingName = Annotated[str, StringConstraints(pattern=r"^(HERALD|AWS)_[A-Z0-9_]{1,64}$")]
SettingValue = Annotated[str, StringConstraints(max_length=16_384)]


class Health(BaseModel):
    """200 only when every check is ``ok``; 503 with the failing checks otherwise."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(examples=[{"database": "ok", "relay": "ok", "sender-0": "ok"}])


class ProviderStatus(BaseModel):
    channel: Channel
    provider: str
    enabled: bool = Field(description="the channel's chain lists it")
    failover_rank: int | None = Field(None, description="1 is tried first")
    status: Literal["configured", "unconfigured"]
    detail: str | None = Field(None, description="what an unconfigured provider misses")


class CredentialsRequest(RootModel[dict[SettingName, SettingValue]]):
    """Provider settings of the tenant's own account, such as ``{"HERALD_SENDGRID_API_KEY": "SG..."}``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"HERALD_SENDGRID_API_KEY": "SG.tenant-key"}]})

    root: dict[SettingName, SettingValue] = Field(min_length=1, max_length=64)


class CredentialsStored(BaseModel):
    channel: Channel
    provider: str
    names: list[str] = Field(description="the settings stored (their values are never shown)")


class PlatformQueues(QueuesSnapshot):
    """The platform operator's view, from the relay: per broker queue its depth, consumers, the age of its
    oldest ready envelope and the rates in and out over the last minute; and the outbox backlog."""

    view: Literal["platform"] = "platform"


class TenantQueues(TenantQueuesView):
    """A tenant admin's view: its own messages by status, and how many wait with the age of the oldest."""

    view: Literal["tenant"] = "tenant"


QueueReport = Annotated[PlatformQueues | TenantQueues, Field(discriminator="view")]
