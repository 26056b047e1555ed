"""Estimates at admission from the routing table: the dearest configured provider for the destination."""

from __future__ import annotations

import json
from decimal import Decimal

from engine.channels import Channel
from engine.governance.budgets import PriceQuery
from engine.governance.prices import TablePrices
from engine.routing import SHIPPED_TABLE, load_table
from engine.routing.table import TenantRoutingDoc

TABLE = load_table(SHIPPED_TABLE)


def test_the_dearest_configured_provider_for_the_destination_times_the_units() -> None:
    prices = TablePrices({Channel.SMS: ("console", "twilio", "sns")}, TABLE)
    assert prices(PriceQuery("t", Channel.SMS, "marketing", "GB")) == Decimal("0.045")  # twilio above sns
    assert prices(PriceQuery("t", Channel.SMS, None, "GB", units=3)) == Decimal("0.135")
    assert TablePrices({Channel.SMS: ("sns",)}, TABLE)(PriceQuery("t", Channel.SMS, None, "GB")) == Decimal("0.04")


def test_no_table_or_no_price_estimates_nothing() -> None:
    assert TablePrices({Channel.SMS: ("twilio",)})(PriceQuery("t", Channel.SMS, None, "GB")) == 0
    prices = TablePrices({Channel.SMS: ("twilio",)}, TABLE)
    assert prices(PriceQuery("t", Channel.SMS, None, "ZZ")) == 0  # a destination no provider prices
    assert prices(PriceQuery("t", Channel.PUSH, None, None)) == 0  # a channel with no provider here


def test_a_new_table_prices_again_what_was_priced_before() -> None:
    prices = TablePrices({Channel.SMS: ("sns",)})
    gb = PriceQuery("t", Channel.SMS, None, "GB")
    assert prices(gb) == 0  # no table yet
    prices.use(TABLE)
    assert prices(gb) == Decimal("0.04")
    assert prices(gb) == Decimal("0.04")  # the second from the prices worked out


def test_only_the_providers_the_tenant_allows_are_priced_at_its_own_prices() -> None:
    prices = TablePrices({Channel.SMS: ("console", "twilio", "sns")}, TABLE)
    assert prices(PriceQuery("t", Channel.SMS, None, "GB", allow=("sns",))) == Decimal("0.04")  # not twilio's
    assert prices(PriceQuery("t", Channel.SMS, None, "GB", allow=("vonage",))) == 0  # nothing it allows is here
    own = TenantRoutingDoc.model_validate({"channels": {"sms": {"sns": {"prices": {"GB": 0.01}}}}})
    overrides = json.dumps(own.model_dump(mode="json", exclude_defaults=True), sort_keys=True)
    cheaper = PriceQuery("t", Channel.SMS, None, "GB", allow=("sns",), overrides=overrides)
    assert prices(cheaper) == Decimal("0.01")
    assert prices(PriceQuery("t", Channel.SMS, None, "GB", allow=("sns",), overrides="{not json")) == Decimal("0.04")
