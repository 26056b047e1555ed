"""The governance sections of the tenant config: ``limits``, ``quotas``, ``budgets``, ``preferences`` and
``attachments`` (what one tenant may send, spend and attach, and what its recipients cannot opt out of).

Every key is optional with a default that limits nothing, except ``attachments.buckets`` (no bucket until
the platform names one) and ``preferences.required_categories`` (``auth`` and ``transactional``).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Literal

from babel.numbers import list_currencies
from pydantic import Field, PlainSerializer, StringConstraints, field_validator, model_validator

from engine.channels import Channel

from .base import CategoryName, Section

#: A money amount in the tenant's ``budgets.currency``: a number in JSON, a Decimal inside.
Money = Annotated[
    Decimal,
    Field(ge=0, le=1_000_000_000_000, decimal_places=6),
    PlainSerializer(float, when_used="json", return_type=float),
]
Percent = Annotated[int, Field(ge=1, le=100)]
#: A cap on messages per period; 0 closes the channel for the period.
Cap = Annotated[int, Field(ge=0, le=1_000_000_000_000)]
#: ``bucket`` or ``bucket/prefix``: S3 bucket naming rules, then a key prefix without spaces.
BucketRef = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S{0,1024})?$")]

DEFAULT_SOFT_CAP_PERCENT = 80
DEFAULT_REQUIRED_CATEGORIES: tuple[str, ...] = ("auth", "transactional")
DEFAULT_HELP_TEXT = "Reply STOP to stop these messages, START to receive them again."
#: The quota keys of ``limits.<channel>``, smallest period first.
QUOTA_KEYS: tuple[str, ...] = ("per_minute", "per_day", "per_month")


class ChannelLimits(Section):
    """``limits.<channel>``: the send rate (a token bucket, enforced by the senders) and the quotas per UTC
    calendar minute, day and month (counted at admission). Every key is off when null."""

    rate_per_second: float | None = Field(None, gt=0, le=1_000_000, description="messages per second, sustained")
    burst: int | None = Field(
        None, ge=1, le=1_000_000, description="messages sent at once after a pause; null: one second's worth"
    )
    per_minute: Cap | None = Field(None, description="messages accepted per UTC calendar minute")
    per_day: Cap | None = Field(None, description="messages accepted per UTC calendar day")
    per_month: Cap | None = Field(None, description="messages accepted per UTC calendar month")

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> ChannelLimits:
        if self.burst is not None and self.rate_per_second is None:
            raise ValueError("burst needs rate_per_second")
        return self

    def bucket(self) -> tuple[float, int] | None:
        """``(rate_per_second, burst)``, or None when the channel's rate is not limited."""
        if self.rate_per_second is None:
            return None
        return self.rate_per_second, self.burst or max(1, math.ceil(self.rate_per_second))

    def quota_caps(self) -> dict[str, int]:
        """The quotas that are set, by key (``{"per_day": 1000}``)."""
        caps = {key: getattr(self, key) for key in QUOTA_KEYS}
        return {key: cap for key, cap in caps.items() if cap is not None}


class LimitsConfig(Section):
    """``limits``: one entry per channel."""

    email: ChannelLimits = Field(default_factory=ChannelLimits)
    sms: ChannelLimits = Field(default_factory=ChannelLimits)
    push: ChannelLimits = Field(default_factory=ChannelLimits)
    whatsapp: ChannelLimits = Field(default_factory=ChannelLimits)
    inapp: ChannelLimits = Field(default_factory=ChannelLimits)

    def channel(self, channel: Channel) -> ChannelLimits:
        found: ChannelLimits = getattr(self, channel.value)
        return found


class QuotasConfig(Section):
    """``quotas``: what applies to every quota of ``limits``."""

    soft_cap_percent: Percent = Field(
        DEFAULT_SOFT_CAP_PERCENT, description="a QuotaWarning once per window when this share of a quota is used"
    )


class ChannelBudget(Section):
    """``budgets.<channel>``: a monthly budget in ``budgets.currency``."""

    monthly: Money | None = Field(None, description="spend per UTC calendar month; null: no budget")
    soft_cap_percent: Percent = Field(
        DEFAULT_SOFT_CAP_PERCENT, description="a BudgetWarning once per month when this share is spent"
    )


class BudgetsConfig(Section):
    """``budgets``: the currency, what an exhausted budget does, and one entry per channel."""

    currency: str = Field("USD", description="ISO 4217 code of every amount under budgets")
    on_exhausted: Literal["refuse", "required_only"] = Field(
        "refuse",
        description="refuse: every message is refused (429); required_only: messages of required categories "
        "(preferences.required_categories) still go",
    )
    email: ChannelBudget = Field(default_factory=ChannelBudget)
    sms: ChannelBudget = Field(default_factory=ChannelBudget)
    push: ChannelBudget = Field(default_factory=ChannelBudget)
    whatsapp: ChannelBudget = Field(default_factory=ChannelBudget)
    inapp: ChannelBudget = Field(default_factory=ChannelBudget)

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        if value not in _CURRENCIES:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code (such as USD, EUR, GBP)")
        return value

    def channel(self, channel: Channel) -> ChannelBudget:
        found: ChannelBudget = getattr(self, channel.value)
        return found


class PreferencesConfig(Section):
    """``preferences``: what recipients' preferences and unsubscribes cannot turn off."""

    required_categories: tuple[CategoryName, ...] = Field(
        DEFAULT_REQUIRED_CATEGORIES,
        max_length=32,
        description="categories no recipient can opt out of, exempt from unsubscribes and STOP replies and from "
        "a budget stop under budgets.on_exhausted = required_only",
    )

    help_text: str = Field(
        DEFAULT_HELP_TEXT,
        min_length=1,
        max_length=480,
        description="the answer to a HELP reply on SMS (and what a WhatsApp HELP is recorded with)",
    )

    @field_validator("required_categories")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("names a category more than once")
        return value

    def is_required(self, category: str | None) -> bool:
        return category is not None and category in self.required_categories


class AttachmentsConfig(Section):
    """``attachments``: where a tenant's attachments may come from."""

    buckets: tuple[BucketRef, ...] = Field(
        (),
        max_length=64,
        description="S3 buckets (bucket, or bucket/prefix: keys starting with the prefix, as S3 and IAM read "
        "it) the tenant's attachments may name; empty: no attachment is accepted",
    )

    def allows(self, s3_url: str) -> bool:
        """Whether ``s3://bucket/key`` is inside one of the tenant's buckets."""
        bucket, sep, key = s3_url.removeprefix("s3://").partition("/")
        if not s3_url.startswith("s3://") or not sep or not key:
            return False
        for ref in self.buckets:
            ref_bucket, _, prefix = ref.partition("/")
            if ref_bucket == bucket and key.startswith(prefix):
                return True
        return False


_CURRENCIES = frozenset(list_currencies())
