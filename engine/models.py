"""The message model at the API edge (pydantic) and the records the engine passes around (dataclasses)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, HttpUrl, field_validator

from engine.channels import Channel, Priority

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TEMPLATE_REF = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}(:v[1-9]\d{0,5})?$")
MAX_TTL_S = 30 * 24 * 3600


class PushTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns"]
    token: str = Field(min_length=8, max_length=4096)


class Recipient(BaseModel):
    """``to``: the spec's fields plus ``user_id`` and ``push``."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    phone: str | None = None
    device_token: str | None = Field(None, min_length=8, max_length=4096)
    user_id: str | None = Field(None, min_length=1, max_length=255)
    push: PushTarget | None = None
    name: str | None = Field(None, max_length=200)

    @field_validator("phone")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value is not None:
            compact = re.sub(r"[\s().-]", "", value)
            if not E164.match(compact):
                raise ValueError("must be an E.164 number such as +447700900123")
            return compact
        return value


class AttachmentRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    s3: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$")
    filename: str | None = Field(None, max_length=255)
    content_type: str | None = Field(None, max_length=255)


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    category: str | None = Field(None, max_length=64)
    tags: list[str] = Field(default_factory=list, max_length=32)


class NotificationRequest(BaseModel):
    """``POST /api/notifications``: the spec's message model."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = Field(None, max_length=63)
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    channel: Channel
    template_id: str = Field(max_length=110)
    locale: str | None = Field(None, max_length=35)
    to: Recipient
    variables: dict[str, Any] = Field(default_factory=dict)
    attachments: list[AttachmentRef] = Field(default_factory=list, max_length=10)
    metadata: Metadata = Field(default_factory=Metadata)
    priority: Priority = Priority.NORMAL
    schedule_at: AwareDatetime | None = None
    ttl_seconds: int | None = Field(None, gt=0, le=MAX_TTL_S)
    callback_url: HttpUrl | None = None
    trace_id: str | None = Field(None, max_length=128)

    @field_validator("template_id")
    @classmethod
    def _template_ref(cls, value: str) -> str:
        if not TEMPLATE_REF.match(value):
            raise ValueError("must look like 'otp_login' or 'otp_login:v3'")
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from babel import Locale, UnknownLocaleError

        try:
            parsed = Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError, TypeError):
            raise ValueError(f"{value!r} is not a known locale (use a BCP 47 tag such as en-GB)") from None
        return "-".join(p for p in (parsed.language, parsed.script, parsed.territory) if p)


#: The address field each channel needs in ``to``.
REQUIRED_ADDRESS: dict[Channel, tuple[str, ...]] = {
    Channel.EMAIL: ("email",),
    Channel.SMS: ("phone",),
    Channel.WHATSAPP: ("phone",),
    Channel.PUSH: ("push", "device_token"),
    Channel.INAPP: ("user_id",),
}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with the request, located like pydantic's errors (``["body", "to", "email"]``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


def address_errors(request: NotificationRequest) -> list[FieldError]:
    needed = REQUIRED_ADDRESS[request.channel]
    if any(getattr(request.to, name) for name in needed):
        return []
    return [
        FieldError(
            ("body", "to", needed[0]),
            f"a {request.channel.value} notification needs to.{' or to.'.join(needed)}",
            "missing",
        )
    ]


@dataclass(frozen=True, slots=True)
class Tenant:
    id: uuid.UUID
    slug: str
    name: str
    region: str
    config: dict[str, Any] = field(default_factory=dict)
    templates_version: int = 0  #: bumped by every publish of the tenant's templates

    @property
    def default_locale(self) -> str | None:
        value = self.config.get("default_locale")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A validated request, resolved and pinned, ready to be stored."""

    id: uuid.UUID
    tenant: Tenant
    channel: Channel
    template_id: str
    template_version: int
    locale: str
    requested_locale: str | None
    to: dict[str, Any]
    variables: dict[str, Any]
    metadata: dict[str, Any]
    priority: Priority
    schedule_at: datetime | None
    ttl_seconds: int | None
    expires_at: datetime | None
    idempotency_key: str
    request_hash: str
    callback_url: str | None
    trace_id: str | None
    attachments: tuple[AttachmentRef, ...] = ()

    @property
    def scheduled(self) -> bool:
        return self.schedule_at is not None


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A message a sender holds the lease on."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_slug: str
    tenant_templates_version: int
    tenant_config: dict[str, Any]
    channel: Channel
    template_id: str
    template_version: int
    locale: str
    to: dict[str, Any]
    variables: dict[str, Any]
    metadata: dict[str, Any]
    priority: Priority
    attempts: int  #: including this one
    created_at: datetime
    expires_at: datetime | None
    suppressed: bool = False  #: the address is on the tenant's suppression list
    attachments: tuple[dict[str, Any], ...] = ()  #: ``{"s3", "filename", "content_type"}`` references
    tenant_region: str = "eu"
    #: The provider whose attempt timed out after sending on the last pass (the retry goes there).
    pinned_provider: str | None = None

    def address(self) -> tuple[str, str] | None:
        """The (kind, address) a suppression list would hold for this recipient."""
        if self.to.get("email"):
            return ("email", str(self.to["email"]).lower())
        if self.to.get("phone"):
            return ("phone", str(self.to["phone"]))
        return None
