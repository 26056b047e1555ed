"""Token buckets per (tenant, channel), handed out in leases, with fair sharing of a channel's capacity.

Senders do not take one token per message: they ask for up to ``want`` tokens for a tenant and channel
and get ``granted <= want`` at once, plus when the next token is due when that was not everything (the
rest of their messages wait ``throttled`` until then). One call carries every key of a sender's batch.

Each tenant's bucket refills at its own ``limits.<channel>.rate_per_second`` up to its burst, so a tenant
at its limit never takes anything from another. When the platform gives a channel a capacity (the
provider account's rate, say), tenants share it max-min fairly: within a priority, a tenant asking for
less than an equal share gets what it asks, the others split the rest equally (never above their own
limit), and capacity nobody asks for goes to whoever can use it. Higher priorities are served first.
Demand is each bucket's recent asking rate (decaying over ``demand_tau_s``); shares are recomputed every
``rebalance_s`` and whenever a tenant starts or stops asking.

This is a plain object with an injected clock (seconds, monotonic): the governor actor runs one per
shard (tenants are split between shards by :func:`shard_for`), and tests run it on a fake clock.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.channels import PRIORITY_ORDER, Channel, Priority

#: Tokens a float error may leave short of a whole one still count as that token.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's refill rate and size."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_second > 0 or self.burst < 1:
            raise ValueError("a rate needs per_second > 0 and burst >= 1")


BucketKey = tuple[str, Channel]


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """Up to ``want`` tokens for ``tenant`` on ``channel``.

    ``rate`` is the tenant's limit as the sender's copy of its config says (None: not limited); when
    senders disagree during a config change, the request with the newest ``config_version`` wins.
    ``returned`` gives back tokens of earlier leases the sender did not use.
    """

    tenant: str
    channel: Channel
    want: int
    rate: Rate | None = None
    priority: Priority = Priority.NORMAL
    config_version: int = 0
    returned: int = 0

    @property
    def key(self) -> BucketKey:
        return (self.tenant, self.channel)


@dataclass(frozen=True, slots=True)
class Lease:
    """``granted`` tokens, to use now. When fewer than wanted, ``retry_after_s`` says when the next token is
    due (None when everything wanted was granted)."""

    tenant: str
    channel: Channel
    granted: int
    retry_after_s: float | None = None

    @property
    def key(self) -> BucketKey:
        return (self.tenant, self.channel)


@dataclass(frozen=True, slots=True)
class FairShareOptions:
    rebalance_s: float = 0.25  #: how often a channel's shares are recomputed
    demand_tau_s: float = 1.0  #: time constant of the demand estimate
    #: A share is the demand times this: a tenant asking at a steady rate is not held just under it by
    #: the estimate's ripple between its requests.
    demand_headroom: float = 1.5
    idle_s: float = 2.0  #: a bucket not asked for this long takes no share
    forget_s: float = 600.0  #: a bucket not asked for this long is dropped (it would be full again anyway)


@dataclass(frozen=True, slots=True)
class BucketState:
    """What a bucket looks like now (for tests, logs and gauges)."""

    tenant: str
    channel: Channel
    tokens: float
    rate_per_second: float | None  #: the rate it refills at now (its fair share when the channel is shared)
    demand_per_second: float


def shard_for(tenant: str, shards: int) -> int:
    """The governor shard that holds ``tenant``'s buckets: stable across processes and restarts (CRC-32 of
    the slug, never Python's salted ``hash``)."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    return zlib.crc32(tenant.encode()) % shards


def water_fill(demands: Mapping[Hashable, float], capacity: float) -> dict[Hashable, float]:
    """Max-min fair split of ``capacity``: whoever asks for less than an equal share gets what it asks; the
    others split what is left equally. ``inf`` asks for as much as it can get."""
    alloc: dict[Hashable, float] = {}
    left = max(0.0, capacity)
    ordered = sorted(demands.items(), key=lambda kv: kv[1])
    for i, (key, demand) in enumerate(ordered):
        give = min(max(0.0, demand), left / (len(ordered) - i))
        alloc[key] = give
        left -= give
    return alloc


@dataclass(slots=True)
class _Bucket:
    tenant: str
    channel: Channel
    tokens: float
    at: float
    rate: Rate | None = None
    version: int = -1
    priority: Priority = Priority.NORMAL
    effective: float = math.inf  #: refill rate now: the own rate, or the fair share of a shared channel
    size: float = math.inf  #: bucket size now
    demand: float = 0.0  #: decaying sum of tokens asked for
    demand_at: float = 0.0
    seen_at: float = 0.0

    def refill(self, now: float) -> None:
        if now > self.at and math.isfinite(self.effective):
            self.tokens = min(self.size, self.tokens + (now - self.at) * self.effective)
        self.at = max(self.at, now)

    def demand_rate(self, now: float, tau: float) -> float:
        return self.demand * math.exp(-(now - self.demand_at) / tau) / tau

    def ask(self, want: int, now: float, tau: float) -> None:
        self.demand = self.demand * math.exp(-(now - self.demand_at) / tau) + want
        self.demand_at = now
        self.seen_at = now

    def cap(self) -> float:
        return self.rate.per_second if self.rate else math.inf


@dataclass(slots=True)
class _Pool:
    """A channel's capacity, shared by its tenants."""

    rate: Rate
    tokens: float
    at: float
    members: set[BucketKey] = field(default_factory=set)
    active: frozenset[BucketKey] = frozenset()
    rebalanced_at: float = -math.inf

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(float(self.rate.burst), self.tokens + (now - self.at) * self.rate.per_second)
            self.at = now


class TokenBuckets:
    """Every bucket of one governor shard. ``capacity``: the channels whose capacity tenants share."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        capacity: Mapping[Channel, Rate] | None = None,
        options: FairShareOptions | None = None,
    ) -> None:
        self.clock = clock
        self.options = options or FairShareOptions()
        now = clock()
        self._buckets: dict[BucketKey, _Bucket] = {}
        self._pools = {c: _Pool(rate, float(rate.burst), now) for c, rate in (capacity or {}).items()}
        self._swept_at = now

    def lease(self, requests: Sequence[LeaseRequest]) -> list[Lease]:
        """One lease per request, in order. Raises: ValueError for a negative ``want`` or ``returned``."""
        now = self.clock()
        for r in requests:
            if r.want < 0 or r.returned < 0:
                raise ValueError("want and returned cannot be negative")
            self._observe(r, now)
        for pool in self._pools.values():
            self._rebalance(pool, now)
        leases = [self._grant(r, now) for r in requests]
        if now - self._swept_at > self.options.rebalance_s * 100:
            self._sweep(now)
        return leases

    def states(self) -> list[BucketState]:
        now = self.clock()
        out = []
        for b in self._buckets.values():
            b.refill(now)
            rate = b.effective if math.isfinite(b.effective) else None
            demand = b.demand_rate(now, self.options.demand_tau_s)
            out.append(BucketState(b.tenant, b.channel, b.tokens, rate, demand))
        return out

    # -- steps -------------------------------------------------------------------------------------

    def _observe(self, r: LeaseRequest, now: float) -> None:
        b = self._buckets.get(r.key)
        if b is None:
            b = self._buckets[r.key] = _Bucket(r.tenant, r.channel, tokens=0.0, at=now, demand_at=now)
            self._set_rate(b, r.rate, fill=True)
            pool = self._pools.get(r.channel)
            if pool is not None:
                pool.members.add(r.key)
        b.refill(now)
        if r.config_version >= b.version:
            b.version = r.config_version
            if r.rate != b.rate:
                self._set_rate(b, r.rate, fill=False)
        b.priority = r.priority
        b.ask(r.want, now, self.options.demand_tau_s)
        if r.returned:
            b.tokens = min(b.size, b.tokens + r.returned)
            pool = self._pools.get(r.channel)
            if pool is not None:
                pool.refill(now)
                pool.tokens = min(float(pool.rate.burst), pool.tokens + r.returned)

    def _set_rate(self, b: _Bucket, rate: Rate | None, *, fill: bool) -> None:
        b.rate = rate
        pool = self._pools.get(b.channel)
        b.size = float(rate.burst) if rate else float(pool.rate.burst) if pool else math.inf
        b.effective = rate.per_second if rate else pool.rate.per_second if pool else math.inf
        b.tokens = b.size if fill else min(b.tokens, b.size)
        if pool is not None:
            pool.rebalanced_at = -math.inf  # a changed limit changes everyone's share

    def _grant(self, r: LeaseRequest, now: float) -> Lease:
        b = self._buckets[r.key]
        pool = self._pools.get(r.channel)
        if pool is None and b.rate is None:
            return Lease(r.tenant, r.channel, r.want)
        b.refill(now)
        available = math.floor(b.tokens + _EPSILON)
        if pool is not None:
            pool.refill(now)
            available = min(available, math.floor(pool.tokens + _EPSILON))
        granted = max(0, min(r.want, available))
        b.tokens -= granted
        if pool is not None:
            pool.tokens -= granted
        if granted == r.want:
            return Lease(r.tenant, r.channel, granted)
        due = _due(b.tokens, b.effective, self.options.rebalance_s)
        if pool is not None:
            due = max(due, _due(pool.tokens, pool.rate.per_second, self.options.rebalance_s))
        return Lease(r.tenant, r.channel, granted, due)

    def _rebalance(self, pool: _Pool, now: float) -> None:
        """Each active member's refill rate becomes its fair share of the pool (capped by its own limit)."""
        idle = self.options.idle_s
        active = frozenset(k for k in pool.members if now - self._buckets[k].seen_at <= idle)
        if active == pool.active and now - pool.rebalanced_at < self.options.rebalance_s:
            return
        tau, headroom = self.options.demand_tau_s, self.options.demand_headroom
        alloc = {k: 0.0 for k in active}
        left = pool.rate.per_second
        for tier in PRIORITY_ORDER:
            asking = {
                k: min(self._buckets[k].demand_rate(now, tau) * headroom, self._buckets[k].cap())
                for k in active
                if self._buckets[k].priority is tier
            }
            for k, give in water_fill(asking, left).items():
                alloc[k] += give
                left -= give
        # What nobody asked for goes to whoever can take more (work-conserving), never above a limit.
        room = {k: self._buckets[k].cap() - alloc[k] for k in active}
        for k, give in water_fill(room, left).items():
            alloc[k] += give
        for k in pool.members:
            b = self._buckets[k]
            b.refill(now)
            b.effective = alloc[k] if k in alloc else min(b.cap(), pool.rate.per_second)
        pool.active = active
        pool.rebalanced_at = now

    def _sweep(self, now: float) -> None:
        forget = self.options.forget_s
        for key in [k for k, b in self._buckets.items() if now - b.seen_at > forget]:
            del self._buckets[key]
            pool = self._pools.get(key[1])
            if pool is not None:
                pool.members.discard(key)
        self._swept_at = now


def _due(tokens: float, rate: float, fallback_s: float) -> float:
    """Seconds until ``tokens`` reaches a whole token at ``rate``; a rate of 0 (no share right now) asks
    again after the next rebalance."""
    short = 1.0 - tokens
    if short <= _EPSILON:
        return 0.0
    if rate <= 0 or not math.isfinite(rate):
        return fallback_s
    return short / rate
