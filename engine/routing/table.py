"""The routing table: per channel and provider, unit prices by destination (with volume tiers), seeds
for reliability and latency, region tags, breaker thresholds; and the policy rules.

The document is YAML (the shipped one is ``engine/routing/routing_table.yaml``, which documents every
key), validated by the pydantic models below and turned into frozen dataclasses. A tenant may override
prices and seeds for its own traffic in its config (``routing.channels.<channel>.<provider>``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.channels import Channel
from engine.errors import ConfigurationError

from .breaker import BreakerPolicy
from .policy import DEFAULT_RULES, Criterion, PolicyRule, choose_rule

SHIPPED_TABLE = Path(__file__).with_name("routing_table.yaml")
#: The destination key that matches any country or region.
ANY = "*"
BYTES_PER_GB = 1e9


# -- the document (pydantic, at the edge) ----------------------------------------------------------


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TierDoc(_Doc):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    start: int = Field(alias="from", ge=1, description="applies from this send of the month on (1 = the first)")
    price: float = Field(ge=0)


#: A price: one number, or volume tiers ``[{from: 1, price: ...}, {from: 150001, price: ...}]``.
PriceDoc = Annotated[float, Field(ge=0)] | list[TierDoc]


class BreakerDoc(_Doc):
    window_s: float | None = Field(None, gt=0)
    min_requests: int | None = Field(None, ge=1)
    error_rate: float | None = Field(None, gt=0, le=1)
    consecutive_failures: int | None = Field(None, ge=0)
    cooldown_s: float | None = Field(None, gt=0)
    probes: int | None = Field(None, ge=1)
    probe_lease_s: float | None = Field(None, gt=0)
    check_s: float | None = Field(None, ge=0)
    check_failures: int | None = Field(None, ge=1)

    def over(self, base: BreakerPolicy) -> BreakerPolicy:
        return replace(base, **{k: v for k, v in self.model_dump().items() if v is not None})


class PricedDoc(_Doc):
    """What a tenant may override, and the priced part of a provider entry."""

    prices: dict[str, PriceDoc] = Field(default_factory=dict)
    prices_by_category: dict[str, dict[str, PriceDoc]] = Field(default_factory=dict)
    surcharge_usd: float | None = Field(None, ge=0)
    reliability: float | None = Field(None, ge=0, le=1)
    latency_ms: float | None = Field(None, ge=0)

    @field_validator("prices")
    @classmethod
    def _destinations(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in value if k != ANY and not (len(k) == 2 and k.isalpha() and k.isupper()) and not k.islower()]
        if bad:
            raise ValueError(f"destinations are ISO 3166 alpha-2 codes (GB), regions (eu) or '*': {bad}")
        return value


class ProviderDoc(PricedDoc):
    unit: Literal["message", "segment"] = "message"
    same_prices_as: str | None = None
    per_gb_attachments_usd: float = Field(0.0, ge=0)
    regions: list[str] = Field(default_factory=list)
    breaker: BreakerDoc | None = None


class RuleDoc(_Doc):
    name: str = Field(min_length=1, max_length=64)
    categories: list[str] = Field(default_factory=list)
    priorities: list[Literal["high", "normal", "low"]] = Field(default_factory=list)
    rank_by: list[Criterion] = Field(min_length=1)
    failover: Literal["immediate", "backoff"] = "backoff"


class DefaultsDoc(_Doc):
    reliability: float = Field(0.99, ge=0, le=1)
    latency_ms: float = Field(500.0, ge=0)
    breaker: BreakerDoc = Field(default_factory=BreakerDoc)


class TableDoc(_Doc):
    version: str = Field(min_length=1, max_length=64)
    currency: Literal["USD"] = "USD"
    defaults: DefaultsDoc = Field(default_factory=DefaultsDoc)
    policy: list[RuleDoc] = Field(default_factory=list)
    channels: dict[Channel, dict[str, ProviderDoc]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _coherent(self) -> TableDoc:
        if self.policy and (self.policy[-1].categories or self.policy[-1].priorities):
            raise ValueError("the last policy rule must match every message (no categories, no priorities)")
        for channel, providers in self.channels.items():
            for name, entry in providers.items():
                if entry.same_prices_as and entry.same_prices_as not in providers:
                    raise ValueError(f"channels.{channel.value}.{name}.same_prices_as names an unknown provider")
        return self


class TenantRoutingDoc(_Doc):
    """``tenants.config.routing``: the tenant's email routing region and its price/seed overrides (the
    ``routing`` section of the tenant config document, engine.tenant_config: unknown keys are errors
    naming the dotted path)."""

    email_region: str | None = Field(None, min_length=1, max_length=16)
    channels: dict[Channel, dict[str, PricedDoc]] = Field(default_factory=dict)


# -- the table (dataclasses, inside) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tier:
    start: int
    price: float


@dataclass(frozen=True, slots=True)
class Price:
    tiers: tuple[Tier, ...]

    @classmethod
    def of(cls, doc: float | list[TierDoc]) -> Price:
        if isinstance(doc, int | float):
            return cls((Tier(1, float(doc)),))
        tiers = sorted((Tier(t.start, t.price) for t in doc), key=lambda t: t.start)
        return cls(tuple(tiers))

    def at(self, volume: int) -> float:
        """The price of the next send when ``volume`` were sent this month."""
        price = self.tiers[0].price
        for tier in self.tiers:
            if tier.start <= volume + 1:
                price = tier.price
        return price


def _prices(doc: Mapping[str, float | list[TierDoc]]) -> dict[str, Price]:
    return {k: Price.of(v) for k, v in doc.items()}


@dataclass(frozen=True, slots=True)
class ProviderRoute:
    channel: Channel
    provider: str
    unit: str = "message"
    prices: Mapping[str, Price] = field(default_factory=dict)
    by_category: Mapping[str, Mapping[str, Price]] = field(default_factory=dict)
    same_prices_as: str | None = None
    surcharge_usd: float = 0.0
    per_gb_attachments_usd: float = 0.0
    reliability: float | None = None
    latency_ms: float | None = None
    regions: frozenset[str] = frozenset()  #: empty: serves every region
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)

    def overridden(self, doc: PricedDoc) -> ProviderRoute:
        by_category = {c: dict(p) for c, p in self.by_category.items()}
        for category, prices in doc.prices_by_category.items():
            by_category[category] = {**by_category.get(category, {}), **_prices(prices)}
        return replace(
            self,
            prices={**self.prices, **_prices(doc.prices)},
            by_category=by_category,
            surcharge_usd=self.surcharge_usd if doc.surcharge_usd is None else doc.surcharge_usd,
            reliability=self.reliability if doc.reliability is None else doc.reliability,
            latency_ms=self.latency_ms if doc.latency_ms is None else doc.latency_ms,
        )


def _lookup(prices: Mapping[str, Price], destination: str) -> Price | None:
    return prices.get(destination) or prices.get(ANY)


@dataclass(frozen=True, slots=True)
class RoutingTable:
    version: str  #: the document's own ``version``
    revision: int  #: 1 at start-up, +1 on every reload
    source: str
    digest: str  #: sha256 of the document, first 12 hex digits
    loaded_at: float
    reliability: float  #: the seed for providers the table does not list
    latency_ms: float
    breaker: BreakerPolicy
    rules: tuple[PolicyRule, ...]
    routes: Mapping[tuple[Channel, str], ProviderRoute]

    @property
    def label(self) -> str:
        return f"{self.version}#{self.revision}"

    @property
    def stamp(self) -> tuple[int, str]:
        """What a reader keeps to ask for a newer table. The revision alone starts again at 1 when the
        process holding the table restarts, so it is paired with the document's digest."""
        return (self.revision, self.digest)

    def route(self, channel: Channel, provider: str) -> ProviderRoute | None:
        return self.routes.get((channel, provider))

    def breaker_policy(self, channel: str, provider: str) -> BreakerPolicy:
        found = self.routes.get((Channel(channel), provider))
        return found.breaker if found else self.breaker

    def rule_for(self, category: str | None, priority: str) -> PolicyRule:
        return choose_rule(self.rules, category, priority)

    def unit_price(
        self, channel: Channel, provider: str, destination: str, *, category: str | None = None, volume: int = 0
    ) -> float | None:
        """USD for one unit (a segment for SMS, else a message) at this month's ``volume``; None when the
        table has no price for it."""
        route = self.routes.get((channel, provider))
        if route is None:
            return None
        if route.same_prices_as:
            base = self.unit_price(channel, route.same_prices_as, destination, category=category, volume=volume)
            return None if base is None else round(base + route.surcharge_usd, 6)
        if route.by_category:
            prices = route.by_category.get(category or "") or route.by_category.get(ANY)
            found = _lookup(prices, destination) if prices else None
        else:
            found = _lookup(route.prices, destination)
        return None if found is None else round(found.at(volume) + route.surcharge_usd, 6)

    def cost(
        self,
        channel: Channel,
        provider: str,
        destination: str,
        *,
        units: int = 1,
        category: str | None = None,
        volume: int = 0,
        attachment_bytes: int = 0,
    ) -> float | None:
        """What one send cost: unit price x units (SMS segments), plus attachment data where billed."""
        unit = self.unit_price(channel, provider, destination, category=category, volume=volume)
        if unit is None:
            return None
        route = self.routes[(channel, provider)]
        billed = units if route.unit == "segment" else 1
        return round(unit * billed + attachment_bytes / BYTES_PER_GB * route.per_gb_attachments_usd, 8)

    def for_tenant(self, doc: TenantRoutingDoc) -> RoutingTable:
        routes = dict(self.routes)
        for channel, providers in doc.channels.items():
            for name, override in providers.items():
                base = routes.get((channel, name)) or ProviderRoute(channel, name, breaker=self.breaker)
                routes[(channel, name)] = base.overridden(override)
        return replace(self, routes=routes)


def build_table(doc: TableDoc, *, source: str, digest: str, revision: int = 1) -> RoutingTable:
    default_breaker = doc.defaults.breaker.over(BreakerPolicy())
    routes: dict[tuple[Channel, str], ProviderRoute] = {}
    for channel, providers in doc.channels.items():
        for name, entry in providers.items():
            routes[(channel, name)] = ProviderRoute(
                channel=channel,
                provider=name,
                unit=entry.unit,
                prices=_prices(entry.prices),
                by_category={c: _prices(p) for c, p in entry.prices_by_category.items()},
                same_prices_as=entry.same_prices_as,
                surcharge_usd=entry.surcharge_usd or 0.0,
                per_gb_attachments_usd=entry.per_gb_attachments_usd,
                reliability=entry.reliability,
                latency_ms=entry.latency_ms,
                regions=frozenset(entry.regions),
                breaker=entry.breaker.over(default_breaker) if entry.breaker else default_breaker,
            )
    rules = tuple(
        PolicyRule(
            r.name,
            tuple(r.rank_by),
            categories=frozenset(r.categories),
            priorities=frozenset(r.priorities),
            immediate_failover=r.failover == "immediate",
        )
        for r in doc.policy
    )
    return RoutingTable(
        version=doc.version,
        revision=revision,
        source=source,
        digest=digest,
        loaded_at=time.time(),
        reliability=doc.defaults.reliability,
        latency_ms=doc.defaults.latency_ms,
        breaker=default_breaker,
        rules=rules or DEFAULT_RULES,
        routes=routes,
    )


def parse_table(text: str, *, source: str, revision: int = 1) -> RoutingTable:
    """Raises: ConfigurationError naming the source and the key at fault."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigurationError(f"routing table {source}: not valid YAML ({err})") from None
    try:
        doc = TableDoc.model_validate(raw)
    except ValidationError as err:
        raise ConfigurationError(f"routing table {source}: {_first_problem(err)}") from None
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return build_table(doc, source=source, digest=digest, revision=revision)


def load_table(path: Path, *, revision: int = 1) -> RoutingTable:
    """Raises: ConfigurationError when the file is missing or invalid (the message names it)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigurationError(f"routing table {path}: cannot be read ({err.strerror})") from None
    return parse_table(text, source=str(path), revision=revision)


def config_value(config: Any, key: str) -> Any:
    """``key`` of a tenant config: the stored document (a mapping) or its typed model (attributes)."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def _routing_block(config: Any) -> Any:
    raw = config_value(config, "routing")
    if isinstance(raw, BaseModel):  # a typed tenant config's section
        raw = raw.model_dump(mode="json", exclude_defaults=True)
    return raw or None


def parse_tenant_routing(config: Any) -> TenantRoutingDoc | None:
    """The tenant's ``routing`` block, or None when it has none.

    Raises:
        ConfigurationError: the block is malformed (the message names the key).
    """
    raw = config_value(config, "routing")
    if isinstance(raw, TenantRoutingDoc):
        return raw
    raw = _routing_block(config)
    if not raw:
        return None
    try:
        return TenantRoutingDoc.model_validate(raw)
    except ValidationError as err:
        raise ConfigurationError(f"tenant config routing: {_first_problem(err)}") from None


def tenant_routing_key(config: Any) -> str:
    """A stable key of the tenant's routing block, for caches."""
    raw = _routing_block(config)
    return json.dumps(raw, sort_keys=True, separators=(",", ":")) if raw else ""


def _first_problem(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "document"
    return f"{where}: {first['msg']}"


class TableStore:
    """The current table of one process, reloadable from its file without a restart."""

    def __init__(self, path: Path = SHIPPED_TABLE) -> None:
        self.path = path
        self.table = load_table(path)

    def reload(self) -> RoutingTable:
        """Raises: ConfigurationError (and keeps the table it had) when the file is invalid."""
        self.table = load_table(self.path, revision=self.table.revision + 1)
        return self.table

    def newer_than(self, stamp: tuple[int, str] | None) -> RoutingTable | None:
        """The table, or None when ``stamp`` (a reader's :attr:`RoutingTable.stamp`) is of this one."""
        return None if stamp is not None and tuple(stamp) == self.table.stamp else self.table
