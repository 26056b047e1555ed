"""The routing table: the shipped prices, tiers, categories, tenant overrides, reloads, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.routing import SHIPPED_TABLE, TableStore, load_table, parse_table
from engine.routing.table import parse_tenant_routing

TABLE = """
version: test-1
defaults: {reliability: 0.9, latency_ms: 100, breaker: {cooldown_s: 5}}
policy:
  - {name: cheapest, categories: [marketing], rank_by: [cost]}
  - {name: default, rank_by: [order]}
channels:
  sms:
    twilio:
      unit: segment
      prices: {GB: [{from: 1, price: 0.05}, {from: 101, price: 0.03}], "*": 0.1}
      breaker: {consecutive_failures: 2}
    sns: {unit: segment, prices: {GB: 0.04}, regions: [us]}
"""


def test_the_shipped_table_prices_every_provider_the_issue_names() -> None:
    t = load_table(SHIPPED_TABLE)
    assert t.unit_price(Channel.EMAIL, "ses", "eu") == 0.0001
    assert t.unit_price(Channel.EMAIL, "sendgrid", "us") == 0.000399
    assert t.unit_price(Channel.EMAIL, "sendgrid", "us", volume=50_000) == 0.00133  # Essentials overage
    for provider in ("twilio", "sns"):
        assert all(t.unit_price(Channel.SMS, provider, c) for c in ("US", "GB", "IN", "DE"))
    assert t.unit_price(Channel.SMS, "twilio", "US") == 0.0083
    assert t.unit_price(Channel.SMS, "twilio", "US", volume=150_000) == 0.0081
    assert t.unit_price(Channel.WHATSAPP, "meta", "GB", category="marketing") == 0.0529
    assert t.unit_price(Channel.WHATSAPP, "meta", "GB", category="service") == 0.0
    assert t.unit_price(Channel.WHATSAPP, "twilio", "GB", category="marketing") == pytest.approx(0.0579)
    assert t.unit_price(Channel.SMS, "twilio", "FR") is None  # unpriced: ranked last on cost
    assert t.cost(Channel.SMS, "sns", "GB", units=3) == pytest.approx(0.12)
    assert t.cost(Channel.EMAIL, "ses", "eu", attachment_bytes=500_000_000) == pytest.approx(0.0601)
    assert [r.name for r in t.rules] == ["reliable", "urgent", "cheapest", "default"]


def test_tiers_by_volume_and_wildcard_destinations() -> None:
    t = parse_table(TABLE, source="test")
    assert t.unit_price(Channel.SMS, "twilio", "GB", volume=99) == 0.05
    assert t.unit_price(Channel.SMS, "twilio", "GB", volume=100) == 0.03  # the 101st send of the month
    assert t.unit_price(Channel.SMS, "twilio", "US") == 0.1
    assert t.unit_price(Channel.SMS, "sns", "US") is None
    assert t.breaker_policy("sms", "twilio").consecutive_failures == 2
    assert t.breaker_policy("sms", "twilio").cooldown_s == 5  # defaults still apply
    assert t.breaker_policy("sms", "sns").consecutive_failures == 5
    assert t.route(Channel.SMS, "sns").regions == frozenset({"us"})  # type: ignore[union-attr]


def test_a_tenant_overrides_prices_and_seeds_for_itself() -> None:
    t = parse_table(TABLE, source="test")
    doc = parse_tenant_routing({"routing": {"channels": {"sms": {"sns": {"prices": {"GB": 0.01}, "reliability": 1}}}}})
    assert doc is not None
    mine = t.for_tenant(doc)
    assert mine.unit_price(Channel.SMS, "sns", "GB") == 0.01
    assert mine.route(Channel.SMS, "sns").reliability == 1  # type: ignore[union-attr]
    assert t.unit_price(Channel.SMS, "sns", "GB") == 0.04  # the platform's table is unchanged
    with pytest.raises(ConfigurationError, match=r"channels\.sms\.sns\.reliability"):
        parse_tenant_routing({"routing": {"channels": {"sms": {"sns": {"reliability": 2}}}}})


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("version: x\npolicy: [{name: a, categories: [auth], rank_by: [cost]}]", "last policy rule"),
        ("version: x\nchannels: {sms: {twilio: {prices: {GB: -1}}}}", "channels.sms.twilio.prices.GB"),
        ("version: x\nchannels: {sms: {twilio: {price: 1}}}", "channels.sms.twilio.price"),
        ("version: x\nchannels: {fax: {}}", "channels.fax"),
        ("version: x\nchannels: {whatsapp: {twilio: {same_prices_as: nobody}}}", "same_prices_as"),
        ("channels: [", "not valid YAML"),
    ],
)
def test_a_bad_table_names_the_key(text: str, names: str) -> None:
    with pytest.raises(ConfigurationError, match=names.replace(".", r"\.").replace("[", r"\[")):
        parse_table(text, source="bad.yaml")


def test_reload_picks_up_the_file_and_keeps_the_old_table_when_the_new_one_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "table.yaml"
    path.write_text(TABLE)
    store = TableStore(path)
    assert store.table.revision == 1 and store.table.label == "test-1#1"
    path.write_text(TABLE.replace("GB: 0.04", "GB: 0.02"))
    assert store.reload().unit_price(Channel.SMS, "sns", "GB") == 0.02
    assert store.table.revision == 2
    path.write_text("version: [")
    with pytest.raises(ConfigurationError, match=str(path)):
        store.reload()
    assert store.table.revision == 2 and store.table.unit_price(Channel.SMS, "sns", "GB") == 0.02


def test_a_reader_of_the_table_before_a_restart_gets_the_file_as_it_is_now(tmp_path: Path) -> None:
    path = tmp_path / "table.yaml"
    path.write_text(TABLE)
    before = TableStore(path)
    known = before.table.stamp
    assert before.newer_than(known) is None
    assert before.newer_than(None) is before.table

    path.write_text(TABLE.replace("GB: 0.04", "GB: 0.02"))
    after_restart = TableStore(path)  # the control actor's process started again: revision 1 once more
    assert after_restart.table.revision == known[0]
    fresh = after_restart.newer_than(known)
    assert fresh is not None and fresh.unit_price(Channel.SMS, "sns", "GB") == 0.02
    assert after_restart.newer_than(fresh.stamp) is None
