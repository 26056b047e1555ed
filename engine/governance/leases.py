"""The senders' side of rate limiting: tokens taken from the governor in blocks and kept for a moment, so
a sender asks the governor once per batch at most, and not at all while its blocks last.

A sender calls :meth:`LeaseClient.acquire` once per batch with how many messages it holds for each
(tenant, channel). Each key is served from the blocks it holds first; what is missing is asked for in
one call per governor shard (every key of the batch at once), rounded up to a block of
``block_s`` of the tenant's rate so the next messages find tokens waiting. A key that came back short
is not asked for again until its next token is due. Tokens unused after ``hold_s`` go back to the
governor with the next lease for that key.

When a governor cannot be reached the client grants from its own buckets at ``fallback_share`` of each
tenant's rate (a sender's share of the limit), so sending goes on at no more than the limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from engine.channels import Channel, Priority

from .buckets import BucketKey, Lease, LeaseRequest, Rate, TokenBuckets, shard_for

log = logging.getLogger(__name__)
T = TypeVar("T")


class LeaseSource(Protocol):
    """One governor shard (the actor's handle behind an adapter, or a :class:`LocalLeaseSource`)."""

    async def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        """One lease per request, in order. Raises: any error when the governor cannot be reached."""
        ...


class LocalLeaseSource:
    """A governor in this process (tests, and a single-process Herald)."""

    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets
        self.calls = 0

    async def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        self.calls += 1
        return self.buckets.lease(requests)


@dataclass(frozen=True, slots=True)
class Want:
    """``count`` messages in hand for one key, and the tenant's limit as its config says."""

    count: int
    rate: Rate | None
    priority: Priority = Priority.NORMAL
    config_version: int = 0


@dataclass(frozen=True, slots=True)
class Grant:
    """Send ``granted`` of the messages now; the rest wait ``retry_after_s`` (None when all may go)."""

    granted: int
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class ClientOptions:
    block_s: float = 0.2  #: a lease asks for this much of the tenant's rate beyond what is needed now
    max_block: int = 1000  #: never more than this many tokens beyond what is needed now
    hold_s: float = 1.0  #: leased tokens unused this long go back to the governor
    fallback_share: float = 0.5  #: share of a tenant's rate this client grants itself without a governor
    #: Channels whose capacity the platform shares among tenants: there even an unlimited tenant leases.
    shared_channels: frozenset[Channel] = frozenset()


@dataclass(slots=True)
class _Held:
    tokens: int = 0
    expires_at: float = 0.0
    returned: int = 0  #: tokens that expired here, to give back with the next lease
    blocked_until: float = 0.0


class LeaseClient:
    """Caches leased blocks for one sender. ``sources``: one per governor shard, in shard order."""

    def __init__(
        self,
        sources: Sequence[LeaseSource],
        *,
        clock: Callable[[], float] = time.monotonic,
        options: ClientOptions | None = None,
    ) -> None:
        if not sources:
            raise ValueError("a lease client needs at least one governor shard")
        self.sources = list(sources)
        self.clock = clock
        self.options = options or ClientOptions()
        self._held: dict[BucketKey, _Held] = {}
        self._fallback = TokenBuckets(clock=clock)
        self.calls = 0  #: calls made to governors (a batch served from held blocks makes none)

    async def acquire(self, wants: Mapping[BucketKey, Want]) -> dict[BucketKey, Grant]:
        """How many of each key's messages may be sent now. Never raises for an unreachable governor."""
        now = self.clock()
        grants: dict[BucketKey, Grant] = {}
        asks: dict[BucketKey, tuple[int, LeaseRequest]] = {}
        for key, want in wants.items():
            if want.count <= 0 or (want.rate is None and key[1] not in self.options.shared_channels):
                grants[key] = Grant(max(0, want.count))
                continue
            held = self._held.setdefault(key, _Held())
            taken = self._take(held, want.count, now)
            need = want.count - taken
            if need == 0:
                grants[key] = Grant(taken)
            elif now < held.blocked_until:
                grants[key] = Grant(taken, held.blocked_until - now)
            else:
                asks[key] = (taken, self._request(key, want, need, held))
        if asks:
            leases = await self._lease([r for _, r in asks.values()])
            after = self.clock()
            for key, (taken, request) in asks.items():
                grants[key] = self._settle(key, taken, wants[key].count, request, leases[key], after)
        return grants

    # -- steps -------------------------------------------------------------------------------------

    def _take(self, held: _Held, count: int, now: float) -> int:
        if held.tokens and now >= held.expires_at:
            held.returned += held.tokens
            held.tokens = 0
        taken = min(count, held.tokens)
        held.tokens -= taken
        return taken

    def _request(self, key: BucketKey, want: Want, need: int, held: _Held) -> LeaseRequest:
        extra = 0
        if want.rate is not None:
            extra = min(self.options.max_block, math.ceil(want.rate.per_second * self.options.block_s))
        returned, held.returned = held.returned, 0
        return LeaseRequest(
            key[0], key[1], need + extra, want.rate, want.priority, want.config_version, returned=returned
        )

    def _settle(self, key: BucketKey, taken: int, count: int, request: LeaseRequest, lease: Lease, now: float) -> Grant:
        held = self._held[key]
        need = count - taken
        use = min(need, lease.granted)
        surplus = lease.granted - use
        if surplus:
            held.tokens += surplus
            held.expires_at = now + self.options.hold_s
        if use < need:
            wait = lease.retry_after_s if lease.retry_after_s is not None else 0.0
            held.blocked_until = now + wait
            return Grant(taken + use, wait)
        return Grant(taken + use)

    async def _lease(self, requests: list[LeaseRequest]) -> dict[BucketKey, Lease]:
        by_shard: dict[int, list[LeaseRequest]] = {}
        for r in requests:
            by_shard.setdefault(shard_for(r.tenant, len(self.sources)), []).append(r)
        shards = list(by_shard)
        self.calls += len(shards)
        results = await asyncio.gather(*(self.sources[s].lease(by_shard[s]) for s in shards), return_exceptions=True)
        out: dict[BucketKey, Lease] = {}
        for shard, result in zip(shards, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning("governor shard %d unreachable (%s): local buckets", shard, type(result).__name__)
                result = self._fallback.lease([self._local(r) for r in by_shard[shard]])
            out.update({lease.key: lease for lease in result})
        return out

    def _local(self, r: LeaseRequest) -> LeaseRequest:
        share = self.options.fallback_share
        rate = Rate(r.rate.per_second * share, max(1, math.floor(r.rate.burst * share))) if r.rate else None
        return LeaseRequest(r.tenant, r.channel, r.want, rate, r.priority, r.config_version)


def take_granted(
    items: Sequence[T], key: Callable[[T], BucketKey], grants: Mapping[BucketKey, Grant]
) -> tuple[list[T], list[tuple[T, float]]]:
    """A batch split by its grants, in batch order: the first ``granted`` items of each key go now, the
    others wait (``throttled``) for their key's ``retry_after_s``."""
    left = {k: g.granted for k, g in grants.items()}
    now: list[T] = []
    later: list[tuple[T, float]] = []
    for item in items:
        k = key(item)
        if left.get(k, 0) > 0:
            left[k] -= 1
            now.append(item)
        else:
            grant = grants.get(k)
            wait = grant.retry_after_s if grant is not None and grant.retry_after_s is not None else 0.0
            later.append((item, wait))
    return now, later
