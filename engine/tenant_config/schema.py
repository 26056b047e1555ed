"""The tenant config document: one pydantic model per section, the root collecting them.

Adding a key for a feature is one field with a default on a section (or a new :class:`Section` and one
field on :class:`TenantConfig`): stored documents without it stay valid, merge patches reach it, the
platform's allow-list can name it by its dotted path, and errors name it. Every section forbids unknown
keys, so a typo is an error naming the dotted path, never a setting silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, get_args, get_origin

from babel import Locale, UnknownLocaleError
from pydantic import BaseModel, Field, StrictBool, StringConstraints, field_validator, model_validator

from engine.channels import Channel
from engine.routing.table import TenantRoutingDoc

from .base import CategoryName, Section
from .governance import AttachmentsConfig, BudgetsConfig, LimitsConfig, PreferencesConfig, QuotasConfig

#: A provider's registry name (``sendgrid``, ``twilio``).
ProviderName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
#: ``<channel>:<provider>``, the key of a tenant's sealed provider settings.
CredentialKey = Annotated[str, StringConstraints(pattern=r"^[a-z]+:[a-z][a-z0-9_]{0,31}$")]

#: A backoff step, in seconds: up to a day.
RetryDelay = Annotated[float, Field(gt=0, le=86_400)]

REGION_PATTERN = r"^[a-z]{2}(-[a-z0-9]{1,16}){0,2}$"
#: Dedupe windows that apply unless a tenant sets its own: one-time codes are not sent twice in 30 s.
DEFAULT_DEDUPE_WINDOWS: dict[str, int] = {"auth": 30}
MAX_RETRIES = 10
#: Keys no patch may name: written by their own routes (``PUT /admin/credentials/...``), never shown.
MANAGED_KEYS = frozenset({"credentials"})


class ChannelProviders(Section):
    """``providers.<channel>``."""

    allow: tuple[ProviderName, ...] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="providers this tenant may use on the channel, in its order of preference; "
        "null: every configured provider, in the platform's failover order",
    )

    @model_validator(mode="before")
    @classmethod
    def _not_a_bare_list(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError('a bare list is the old shape; send {"allow": [...]}')
        return value

    @field_validator("allow")
    @classmethod
    def _unique(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("names a provider more than once")
        return value


class ProvidersConfig(Section):
    """``providers``: one entry per channel."""

    email: ChannelProviders = Field(default_factory=ChannelProviders)
    sms: ChannelProviders = Field(default_factory=ChannelProviders)
    push: ChannelProviders = Field(default_factory=ChannelProviders)
    whatsapp: ChannelProviders = Field(default_factory=ChannelProviders)
    inapp: ChannelProviders = Field(default_factory=ChannelProviders)

    def channel(self, channel: Channel) -> ChannelProviders:
        found: ChannelProviders = getattr(self, channel.value)
        return found

    def allowed(self, channel: Channel) -> tuple[str, ...] | None:
        """The tenant's allow-list for ``channel`` in its order, or None when it does not narrow the chain."""
        return self.channel(channel).allow


class ChannelRetries(Section):
    """``retries.<channel>``."""

    delays_s: tuple[RetryDelay, ...] | None = Field(
        None,
        max_length=MAX_RETRIES,
        description="seconds before each retry on this channel ([]: no retry); null: retries.delays_s",
    )


class RetriesConfig(Section):
    """``retries``: the backoff steps, for the tenant and per channel. Each step is jittered by 20 %."""

    delays_s: tuple[RetryDelay, ...] | None = Field(
        None,
        max_length=MAX_RETRIES,
        description="seconds before each retry ([]: no retry); null: the platform's HERALD_RETRY_DELAYS",
    )
    email: ChannelRetries = Field(default_factory=ChannelRetries)
    sms: ChannelRetries = Field(default_factory=ChannelRetries)
    push: ChannelRetries = Field(default_factory=ChannelRetries)
    whatsapp: ChannelRetries = Field(default_factory=ChannelRetries)
    inapp: ChannelRetries = Field(default_factory=ChannelRetries)

    def delays_for(self, channel: Channel) -> tuple[float, ...] | None:
        """The channel's steps, else the tenant's, else None (the platform's)."""
        own: ChannelRetries = getattr(self, channel.value)
        return own.delays_s if own.delays_s is not None else self.delays_s


class DedupeRule(Section):
    """``dedupe.<category>``."""

    window_seconds: int | None = Field(
        None,
        ge=0,
        le=86_400,
        description="the same content to the same recipient inside this window is sent once; 0: off; "
        "null: the category's default (30 for auth, else off)",
    )


class TenantConfig(Section):
    """A tenant's settings, as ``GET /api/tenant`` shows them (``credentials`` are never serialized)."""

    region: str = Field(
        "eu", pattern=REGION_PATTERN, description="where the tenant's data and traffic stay; set by the platform"
    )
    default_locale: str | None = Field(
        None, max_length=35, description="locale used when a message names none (BCP 47, e.g. en-GB)"
    )
    unsubscribe: StrictBool = Field(False, description="email carries RFC 8058 one-click List-Unsubscribe headers")
    providers: ProvidersConfig = Field(default_factory=ProvidersConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    routing: TenantRoutingDoc = Field(
        default_factory=TenantRoutingDoc,
        description="the tenant's email routing region and its own prices, reliability and latency seeds "
        "per channel and provider (overriding the platform's routing table for its traffic)",
    )
    dedupe: dict[CategoryName, DedupeRule] = Field(
        default_factory=lambda: _with_default_windows({}),
        max_length=64,
        description="per message category: the recipient dedupe window",
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    quotas: QuotasConfig = Field(default_factory=QuotasConfig)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    preferences: PreferencesConfig = Field(default_factory=PreferencesConfig)
    attachments: AttachmentsConfig = Field(default_factory=AttachmentsConfig)
    credentials: dict[CredentialKey, str] = Field(default_factory=dict, exclude=True, repr=False)

    @field_validator("dedupe")
    @classmethod
    def _default_windows(cls, value: dict[str, DedupeRule]) -> dict[str, DedupeRule]:
        return _with_default_windows(value)

    def dedupe_window_s(self, category: str | None) -> int:
        """The recipient dedupe window of ``category`` in seconds (0: no dedupe)."""
        rule = self.dedupe.get(category) if category else None
        if rule is None or rule.window_seconds is None:
            return 0
        return rule.window_seconds

    @field_validator("default_locale")
    @classmethod
    def _locale(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError, TypeError):
            raise ValueError(f"{value!r} is not a known locale (use a BCP 47 tag such as en-GB)") from None
        return "-".join(p for p in (parsed.language, parsed.script, parsed.territory) if p)

    def document(self) -> dict[str, Any]:
        """The public document (every key, defaults included): what views show and patches apply to."""
        return self.model_dump(mode="json")

    def stored(self) -> dict[str, Any]:
        """What ``tenants.config`` holds: keys that differ from their defaults, the managed ones, no region
        (``tenants.region`` is its column), so a default changed later reaches every tenant that kept it."""
        doc = self.model_dump(mode="json", exclude_defaults=True, exclude={"region"})
        if self.credentials:
            doc["credentials"] = dict(self.credentials)
        return doc


def _with_default_windows(rules: dict[str, DedupeRule]) -> dict[str, DedupeRule]:
    """Every category with a default window shows it; a rule whose window is null takes its default."""
    out = {c: DedupeRule(window_seconds=w) for c, w in DEFAULT_DEDUPE_WINDOWS.items()}
    for category, rule in rules.items():
        window = rule.window_seconds if rule.window_seconds is not None else DEFAULT_DEDUPE_WINDOWS.get(category, 0)
        out[category] = DedupeRule(window_seconds=window)
    return out


def section_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The section model found at ``path`` (``("providers", "email")``, ``("dedupe", "auth")``), or None
    when there is none. In a mapping of sections (``dedupe``) the part after the field is an entry's key."""
    model: type[BaseModel] = TenantConfig
    parts = list(path)
    while parts:
        part = parts.pop(0)
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        nested = _section_of(field.annotation)
        if nested is None:
            return None
        if get_origin(field.annotation) is dict:
            if not parts:
                return None  # the mapping itself, not one of its sections
            parts.pop(0)
        model = nested
    return model


def is_known_path(dotted: str) -> bool:
    """Whether ``dotted`` (``providers.email.allow``) names a key of the document."""
    *parents, last = dotted.split(".")
    section = section_at(tuple(parents))
    return section is not None and last in section.model_fields and last not in MANAGED_KEYS


def known_keys(section: type[BaseModel]) -> list[str]:
    return sorted(k for k in section.model_fields if k not in MANAGED_KEYS)


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a field that is a section: one of ours, or a model another part of the engine owns
    (``routing`` is the routing table's :class:`~engine.routing.table.TenantRoutingDoc`)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


_DOTTED = re.compile(r"^[a-z_]+(\.[a-z_]+)*$")


def check_paths(paths: tuple[str, ...]) -> list[str]:
    """The entries of ``paths`` that are not keys of the document (for settings that name keys)."""
    return [p for p in paths if not _DOTTED.match(p) or not is_known_path(p)]
