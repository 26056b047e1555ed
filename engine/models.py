"""The message model at the API edge (pydantic) and the records the engine passes around (dataclasses)."""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, EmailStr, Field, HttpUrl, StrictInt, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from engine.channels import Channel, Priority
from engine.feedback.callback_urls import UnsafeCallbackUrl, check_callback_url
from engine.tenant_config.schema import TenantConfig
from engine.timestamps import Instant

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TEMPLATE_REF = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}(:v[1-9]\d{0,5})?$")
MAX_TTL_S = 30 * 24 * 3600
#: Validation context key: accept plain http and private callback URLs (HERALD_WEBHOOKS_ALLOW_PRIVATE).
ALLOW_PRIVATE_CALLBACKS = "allow_private_callbacks"
#: A plain ASCII address: dot-atom local part, a domain of letters, digits, dots and hyphens.
_PLAIN_EMAIL = re.compile(r"^([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@([A-Za-z0-9.-]+)$")


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str:
    """The normalized domain as email-validator judges it (raises as it does): checked once per domain."""
    return EmailStr._validate("x@" + domain).rsplit("@", 1)[1]


class Email(EmailStr):
    """``EmailStr``, with the domain of plain ASCII addresses checked once per domain: email-validator's
    IDNA checks of the domain cost most of a batch item's validation, and batches share few domains.
    Anything else (quoted or non-ASCII local parts, display names, odd domains) takes the full check."""

    @classmethod
    def _validate(cls, input_value: str, /) -> str:
        plain = _PLAIN_EMAIL.match(input_value) if len(input_value) <= 254 else None
        if plain is None or len(plain.group(1)) > 64:
            return EmailStr._validate(input_value)
        address = f"{plain.group(1)}@{_checked_domain(plain.group(2))}"
        return address if len(address) <= 254 else EmailStr._validate(input_value)


@functools.lru_cache(maxsize=1024)
def _canonical_locale(value: str) -> str | None:
    from babel import Locale, UnknownLocaleError

    try:
        parsed = Locale.parse(value.replace("-", "_"))
    except (ValueError, UnknownLocaleError, TypeError):
        return None
    return "-".join(p for p in (parsed.language, parsed.script, parsed.territory) if p)


class CallbackPolicy:
    """What a validation without that context key decides. The API edge (FastAPI) validates request bodies
    without any context, so the process serving HTTP sets this once from HERALD_WEBHOOKS_ALLOW_PRIVATE;
    everywhere else it stays strict."""

    allow_private_by_default: bool = False

    @classmethod
    def set_default(cls, allowed: bool) -> None:
        cls.allow_private_by_default = allowed


class PushTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns"]
    token: str = Field(min_length=8, max_length=4096)


class Recipient(BaseModel):
    """``to``: the spec's fields plus ``user_id`` and ``push``."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    phone: str | None = None
    device_token: str | None = Field(None, min_length=8, max_length=4096)
    user_id: str | None = Field(None, min_length=1, max_length=255)
    push: PushTarget | None = None
    name: str | None = Field(None, max_length=200)

    @field_validator("phone")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        return None if value is None else valid_phone(value)


_NOT_POSSIBLE = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "+{cc} is not a country calling code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short for a +{cc} number",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short for a +{cc} number (is the area code missing?)",
    phonenumbers.ValidationResult.TOO_LONG: "too long for a +{cc} number",
    phonenumbers.ValidationResult.INVALID_LENGTH: "not a length any +{cc} number has",
}


def valid_phone(value: str) -> str:
    """The E.164 form of a number in a range its country assigns (libphonenumber's numbering plans).

    The message says why a number is refused and never repeats it (it is personal data).

    Raises:
        PydanticCustomError: ``phone_format`` (not ``+`` and digits) or ``phone_invalid``.
    """
    compact = re.sub(r"[\s().-]", "", value)
    if not E164.match(compact):
        raise PydanticCustomError("phone_format", "must be an E.164 number: + and the country code (+14155550123)")
    try:
        parsed = phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException:
        raise PydanticCustomError("phone_invalid", "not a phone number: no country has this calling code") from None
    if phonenumbers.is_valid_number(parsed):
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    cc = parsed.country_code
    why = _NOT_POSSIBLE.get(phonenumbers.is_possible_number_with_reason(parsed))
    if why is None:  # the right length, but in no range the country has assigned to a line
        region = phonenumbers.region_code_for_country_code(cc)
        where = f"+{cc}, {region}" if region not in ("001", "ZZ") else f"+{cc}"
        why = (
            f"not in a range assigned to any line ({where}); ranges kept for drama and examples, "
            "such as +44 7700 900xxx, are not numbers"
        )
    raise PydanticCustomError("phone_invalid", "not a valid phone number: {why}", {"why": why.format(cc=cc)})


class AttachmentRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    s3: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$")
    filename: str | None = Field(None, max_length=255)
    content_type: str | None = Field(None, max_length=255)


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    category: str | None = Field(None, max_length=64)
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=32)


class NotificationRequest(BaseModel):
    """``POST /api/notifications``: the spec's message model."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "channel": "email",
                    "template_id": "otp_login:v3",
                    "locale": "en-GB",
                    "to": {"email": "ada@example.com"},
                    "variables": {"code": "384921"},
                    "priority": "high",
                    "idempotency_key": "login-7f3a9c",
                    "metadata": {"category": "auth", "tags": ["otp"]},
                }
            ]
        },
    )

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
    schedule_at: Instant | None = None
    ttl_seconds: StrictInt | None = Field(None, gt=0, le=MAX_TTL_S)
    callback_url: HttpUrl | None = None
    trace_id: str | None = Field(None, max_length=128)

    @field_validator("template_id")
    @classmethod
    def _template_ref(cls, value: str) -> str:
        if not TEMPLATE_REF.match(value):
            raise ValueError("must look like 'otp_login' or 'otp_login:v3'")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: HttpUrl | None, info: ValidationInfo) -> HttpUrl | None:
        if value is not None:
            context = info.context or {}
            allow_private = bool(context.get(ALLOW_PRIVATE_CALLBACKS, CallbackPolicy.allow_private_by_default))
            try:
                check_callback_url(str(value), allow_private=allow_private)
            except UnsafeCallbackUrl as err:
                raise PydanticCustomError("unsafe_callback_url", str(err)) from None
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is None:
            return None
        canonical = _canonical_locale(value)
        if canonical is None:
            raise ValueError(f"{value!r} is not a known locale (use a BCP 47 tag such as en-GB)")
        return canonical


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
    config: TenantConfig = field(default_factory=TenantConfig)
    templates_version: int = 0  #: bumped by every publish of the tenant's templates
    config_version: int = 1  #: bumped by every change of the tenant's config

    @property
    def region(self) -> str:
        return self.config.region

    @property
    def default_locale(self) -> str | None:
        return self.config.default_locale


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
    category: str | None = None  #: ``metadata.category``, else the template manifest's
    tags: tuple[str, ...] = ()
    estimated_cost: Decimal | None = None  #: its budget reservation at admission (governance on)

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
    tenant_config: TenantConfig
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
    #: The category of each of the address's suppression entries (None: every category), as the claim read
    #: them; the sender decides with the tenant's required categories (``recipients.suppressed_by``).
    suppression_categories: tuple[str | None, ...] = ()
    unsubscribe_generation: int = 0  #: the tenant's unsubscribe link key generation
    attachments: tuple[dict[str, Any], ...] = ()  #: ``{"s3", "filename", "content_type"}`` references
    estimated_cost: Decimal | None = None  #: reserved at admission; settled when the message is done with
    tenant_config_version: int = 1
    #: The provider a DLQ replay named (``messages.pinned_provider``): only it is tried.
    pinned_provider: str | None = None
    #: The provider whose attempt timed out after sending on the last pass (the retry goes there first).
    sent_maybe_provider: str | None = None

    @property
    def category(self) -> str | None:
        """The message's category (``metadata.category``, pinned from the template's manifest at admission)."""
        value = (self.metadata or {}).get("category")
        return value if isinstance(value, str) and value else None

    @property
    def tenant_region(self) -> str:
        return self.tenant_config.region

    def address(self) -> tuple[str, str] | None:
        """The (kind, address) a suppression list would hold for this recipient on this channel."""
        token = (self.to.get("push") or {}).get("token") or self.to.get("device_token")
        if self.channel is Channel.PUSH and token:
            return ("device_token", str(token))
        if self.channel in (Channel.SMS, Channel.WHATSAPP) and self.to.get("phone"):
            return ("phone", str(self.to["phone"]))
        if self.to.get("email"):
            return ("email", str(self.to["email"]).lower())
        if self.to.get("phone"):
            return ("phone", str(self.to["phone"]))
        return None
