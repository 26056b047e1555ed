"""UTC calendar windows and quota decisions in memory (no database: admission never touches it)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from engine.channels import Channel
from engine.governance.budgets import Budgets, PriceQuery
from engine.governance.periods import CalendarWindows, Period, Window, window_of
from engine.governance.quotas import Quotas
from engine.models import Tenant
from engine.tenant_config import ConfigInvalid, validate_config


def tenant(config: dict) -> Tenant:  # type: ignore[type-arg]
    return Tenant(uuid.uuid4(), "t_q", "t_q", config=validate_config(config))


@pytest.mark.parametrize(
    ("period", "at", "start", "end"),
    [
        (Period.MINUTE, datetime(2030, 1, 1, 10, 0, 59, 999, tzinfo=UTC), (2030, 1, 1, 10, 0), (2030, 1, 1, 10, 1)),
        (Period.DAY, datetime(2030, 12, 31, 23, 59, tzinfo=UTC), (2030, 12, 31), (2031, 1, 1)),
        (Period.MONTH, datetime(2032, 2, 29, 12, tzinfo=UTC), (2032, 2, 1), (2032, 3, 1)),
        (Period.MONTH, datetime(2030, 12, 15, tzinfo=UTC), (2030, 12, 1), (2031, 1, 1)),
        # 01:30 in UTC+2 is still the previous UTC day
        (Period.DAY, datetime(2030, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))), (2030, 5, 31), (2030, 6, 1)),
    ],
)
def test_windows_are_utc_calendar_periods(period: Period, at: datetime, start: tuple, end: tuple) -> None:  # type: ignore[type-arg]
    assert window_of(period, at) == Window(datetime(*start, tzinfo=UTC), datetime(*end, tzinfo=UTC))


def test_a_naive_moment_has_no_window() -> None:
    with pytest.raises(ValueError):
        window_of(Period.DAY, datetime(2030, 1, 1))


def test_a_channel_without_quotas_is_never_refused_and_sends_no_headers() -> None:
    quotas = Quotas(store=None)  # type: ignore[arg-type]
    t = tenant({})
    for _ in range(1000):
        decision = quotas.admit(t, Channel.EMAIL)
    assert decision.allowed and decision.headers() == {}


def test_the_month_window_is_the_policy_window_and_the_tightest_reset_is_retry_after() -> None:
    now = datetime(2030, 4, 30, 23, 58, 50, tzinfo=UTC)
    quotas = Quotas(store=None, clock=lambda: now)  # type: ignore[arg-type]
    t = tenant({"limits": {"sms": {"per_minute": 1, "per_month": 1}}})
    assert quotas.admit(t, Channel.SMS).allowed
    refused = quotas.admit(t, Channel.SMS)
    assert refused.exceeded is not None and refused.exceeded.name == "limits.sms.per_month"  # frees up last
    headers = refused.headers()
    assert headers["RateLimit-Policy"] == '"sms.per_minute";q=1;w=60, "sms.per_month";q=1;w=2592000'
    assert headers["Retry-After"] == "70"
    assert quotas.admit(t, Channel.EMAIL).allowed  # another channel has its own quotas


def test_a_cap_of_zero_closes_the_channel() -> None:
    quotas = Quotas(store=None)  # type: ignore[arg-type]
    assert not quotas.admit(tenant({"limits": {"whatsapp": {"per_day": 0}}}), Channel.WHATSAPP).allowed


def test_a_limit_change_applies_to_the_next_admission() -> None:
    quotas = Quotas(store=None)  # type: ignore[arg-type]
    t = tenant({"limits": {"sms": {"per_day": 2}}})
    quotas.admit(t, Channel.SMS)
    quotas.admit(t, Channel.SMS)
    assert not quotas.admit(t, Channel.SMS).allowed
    raised = dataclasses.replace(t, config=validate_config({"limits": {"sms": {"per_day": 3}}}))
    assert quotas.admit(raised, Channel.SMS).allowed


def test_a_new_minute_opens_a_new_window_while_the_day_keeps_counting() -> None:
    now = [datetime(2030, 1, 1, 10, 0, 59, tzinfo=UTC)]
    quotas = Quotas(store=None, clock=lambda: now[0])  # type: ignore[arg-type]
    t = tenant({"limits": {"sms": {"per_minute": 1, "per_day": 2}}})
    assert quotas.admit(t, Channel.SMS).allowed
    assert quotas.admit(t, Channel.SMS).exceeded.name == "limits.sms.per_minute"  # type: ignore[union-attr]
    now[0] += timedelta(seconds=1)
    assert quotas.admit(t, Channel.SMS).allowed
    now[0] += timedelta(seconds=61)
    assert quotas.admit(t, Channel.SMS).exceeded.name == "limits.sms.per_day"  # type: ignore[union-attr]
    now[0] = datetime(2030, 1, 2, tzinfo=UTC)
    assert quotas.admit(t, Channel.SMS).allowed


def test_a_budget_change_applies_to_the_next_admission() -> None:
    budgets = Budgets(store=None, price=lambda q: Decimal("1"))  # type: ignore[arg-type]
    t = tenant({"budgets": {"sms": {"monthly": 1}}})
    query = PriceQuery("t_q", Channel.SMS, "marketing")
    assert budgets.admit(t, Channel.SMS, query).allowed
    assert not budgets.admit(t, Channel.SMS, query).allowed
    raised = dataclasses.replace(t, config=validate_config({"budgets": {"sms": {"monthly": 2}}}))
    assert budgets.admit(raised, Channel.SMS, query).allowed


def test_an_estimate_is_never_negative_and_rounds_to_the_micro_unit() -> None:
    budgets = Budgets(store=None, price=lambda q: Decimal("-1") if q.units == 0 else Decimal("0.0123456789"))  # type: ignore[arg-type]
    assert budgets.estimate(PriceQuery("t", Channel.SMS, units=0)) == 0
    assert budgets.estimate(PriceQuery("t", Channel.SMS)) == Decimal("0.012346")


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"limits": {"sms": {"burst": 5}}}, "limits.sms"),
        ({"limits": {"sms": {"rate_per_second": 0}}}, "limits.sms.rate_per_second"),
        ({"limits": {"sms": {"per_day": -1}}}, "limits.sms.per_day"),
        ({"limits": {"fax": {}}}, "limits.fax"),
        ({"quotas": {"soft_cap_percent": 0}}, "quotas.soft_cap_percent"),
        ({"budgets": {"currency": "usd"}}, "budgets.currency"),
        ({"budgets": {"on_exhausted": "ignore"}}, "budgets.on_exhausted"),
        ({"budgets": {"sms": {"monthly": 0.1234567}}}, "budgets.sms.monthly"),
        ({"preferences": {"required_categories": ["auth", "auth"]}}, "preferences.required_categories"),
        ({"preferences": {"required_categories": ["Auth"]}}, "preferences.required_categories.0"),
        ({"attachments": {"buckets": ["s3://x/y"]}}, "attachments.buckets.0"),
    ],
)
def test_bad_governance_keys_name_their_path(doc: dict, path: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigInvalid) as caught:
        validate_config(doc)
    assert path in {p.dotted for p in caught.value.problems}


def test_governance_defaults_and_helpers() -> None:
    config = validate_config(
        {
            "limits": {"sms": {"rate_per_second": 2.5, "per_day": 10}},
            "budgets": {"sms": {"monthly": 12.5}},
            "attachments": {"buckets": ["invoices", "shared/tenant-a/"]},
        }
    )
    assert config.limits.sms.bucket() == (2.5, 3) and config.limits.email.bucket() is None
    assert config.limits.sms.quota_caps() == {"per_day": 10}
    assert config.budgets.sms.monthly == Decimal("12.5") and config.document()["budgets"]["sms"]["monthly"] == 12.5
    assert config.preferences.is_required("auth") and not config.preferences.is_required("marketing")
    assert config.attachments.allows("s3://invoices/2030/1.pdf")
    assert config.attachments.allows("s3://shared/tenant-a/logo.png")
    assert not config.attachments.allows("s3://shared/tenant-b/logo.png")
    assert not config.attachments.allows("s3://other/x") and not config.attachments.allows("s3://invoices")
    assert not validate_config({}).attachments.allows("s3://invoices/1.pdf")  # no bucket until one is named
    assert validate_config(config.stored()) == config  # what is stored reads back the same


def test_calendar_windows_are_worked_out_again_when_the_minute_changes() -> None:
    windows = CalendarWindows()
    before = windows.at(datetime(2030, 1, 31, 23, 59, 59, tzinfo=UTC))
    assert before[Period.MONTH].start == datetime(2030, 1, 1, tzinfo=UTC)
    after = windows.at(datetime(2030, 2, 1, 0, 0, tzinfo=UTC))
    assert after[Period.MONTH].start == datetime(2030, 2, 1, tzinfo=UTC)
    assert after[Period.DAY].start == after[Period.MINUTE].start == datetime(2030, 2, 1, tzinfo=UTC)
    earlier = windows.at(datetime(2030, 1, 15, 12, 0, tzinfo=UTC))  # a clock that went back is not misread
    assert earlier[Period.DAY].start == datetime(2030, 1, 15, tzinfo=UTC)
