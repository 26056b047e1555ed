"""The tenant governor: token buckets in Ray actors, one per shard; a tenant's buckets live on shard
``shard_for(tenant, shards)``, so every sender on every node asks the same actor for that tenant. Shard 0
lives in the control actor (:mod:`actors.control`); shards 1.. (``HERALD_GOVERNOR_SHARDS`` > 1) are
:data:`GovernorActor` actors of their own.

Senders reach the shards through :func:`lease_client` (an engine :class:`LeaseClient` over one
:class:`ActorLeaseSource` per shard): one actor call per shard per batch at most, none while leased blocks
last. A channel's platform capacity is split evenly between the shards (tenants spread evenly over them).
"""

from __future__ import annotations

from collections.abc import Mapping

import ray
from ray.actor import ActorHandle

from actors import CONTROL_ACTOR, NAMESPACE
from engine.channels import Channel
from engine.governance.buckets import BucketState, Lease, LeaseRequest, Rate, TokenBuckets, shard_for
from engine.governance.leases import ClientOptions, LeaseClient

GOVERNOR_ACTOR_PREFIX = "herald-governor-"

__all__ = ["Governor", "GovernorActor", "governor_handles", "lease_client", "shard_for", "start_governors"]


class Governor:
    """One shard's buckets (a plain class: the control actor holds shard 0, :data:`GovernorActor` runs
    it as a Ray actor of its own for the others)."""

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
    """The name of shard ``shard``'s actor (shard 0 is the control actor)."""
    return CONTROL_ACTOR if shard == 0 else f"{GOVERNOR_ACTOR_PREFIX}{shard}"


def start_governors(shards: int) -> list[ActorHandle]:
    """Shards 1.. as actors of their own, named so any process finds them (started once; an existing one
    is reused). Shard 0 is the control actor's."""
    return [
        GovernorActor.options(name=governor_name(i), namespace=NAMESPACE, get_if_exists=True).remote(None, shards)
        for i in range(1, shards)
    ]


def governor_handles(shards: int) -> list[ActorHandle]:
    """Every shard's actor, shard 0 (the control actor) first."""
    return [ray.get_actor(governor_name(i), namespace=NAMESPACE) for i in range(shards)]


class ActorLeaseSource:
    """One shard, as the engine's lease client sees it."""

    def __init__(self, handle: ActorHandle) -> None:
        self.handle = handle

    async def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        leases: list[Lease] = await self.handle.lease.remote(requests)
        return leases


def lease_client(shards: int, options: ClientOptions | None = None) -> LeaseClient:
    """A sender's client of the running governor shards."""
    return LeaseClient([ActorLeaseSource(h) for h in governor_handles(shards)], options=options)
