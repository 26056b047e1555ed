"""The tenant governor: token buckets in Ray actors, one per shard; a tenant's buckets live on shard
``shard_for(tenant, shards)``, so every sender on every node asks the same actor for that tenant.

Senders reach the shards through :func:`lease_client` (an engine :class:`LeaseClient` over one
:class:`ActorLeaseSource` per shard): one actor call per shard per batch at most, none while leased blocks
last. A channel's platform capacity is split evenly between the shards (tenants spread evenly over them).
"""

from __future__ import annotations

from collections.abc import Mapping

import ray
from ray.actor import ActorHandle

from actors import NAMESPACE
from engine.channels import Channel
from engine.governance.buckets import BucketState, Lease, LeaseRequest, Rate, TokenBuckets, shard_for
from engine.governance.leases import ClientOptions, LeaseClient

GOVERNOR_ACTOR_PREFIX = "herald-governor-"

__all__ = ["GovernorActor", "governor_name", "lease_client", "shard_for", "start_governors"]


class Governor:
    """One shard's buckets (a plain class; :data:`GovernorActor` is it as a Ray actor)."""

    def __init__(self, capacity: Mapping[Channel, Rate] | None = None, shards: int = 1) -> None:
        share = {c: Rate(r.per_second / shards, max(1, r.burst // shards)) for c, r in (capacity or {}).items()}
        self.buckets = TokenBuckets(capacity=share)

    def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        return self.buckets.lease(requests)

    def states(self) -> list[BucketState]:
        return self.buckets.states()

    def health(self) -> dict[str, object]:
        return {"buckets": len(self.buckets.states())}


GovernorActor = ray.remote(num_cpus=0.05, max_restarts=-1)(Governor)


def governor_name(shard: int) -> str:
    return f"{GOVERNOR_ACTOR_PREFIX}{shard}"


def start_governors(shards: int, capacity: Mapping[Channel, Rate] | None = None) -> list[ActorHandle]:
    """The shards' actors, named so any process finds them (started once; an existing one is reused)."""
    return [
        GovernorActor.options(name=governor_name(i), namespace=NAMESPACE, get_if_exists=True).remote(
            dict(capacity or {}), shards
        )
        for i in range(shards)
    ]


class ActorLeaseSource:
    """One shard, as the engine's lease client sees it."""

    def __init__(self, handle: ActorHandle) -> None:
        self.handle = handle

    async def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        leases: list[Lease] = await self.handle.lease.remote(requests)
        return leases


def lease_client(shards: int, options: ClientOptions | None = None) -> LeaseClient:
    """A sender's client of the running governor shards (started by :func:`start_governors`)."""
    handles = [ray.get_actor(governor_name(i), namespace=NAMESPACE) for i in range(shards)]
    return LeaseClient([ActorLeaseSource(h) for h in handles], options=options)
