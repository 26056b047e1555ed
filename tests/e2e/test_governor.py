"""The governor as Ray actors: the stack's shards found by name (shard 0 in the control actor), two senders'
clients held to one tenant's rate."""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

from actors import CONTROL_ACTOR, NAMESPACE
from actors.governor import governor_handles, governor_name, lease_client, start_governors
from engine.channels import Channel
from engine.governance.buckets import Rate, shard_for
from engine.governance.leases import Want
from tests.e2e.conftest import Herald

pytestmark = pytest.mark.ray

SHARDS = 2


def test_two_senders_share_one_tenants_rate_through_the_sharded_actors(herald: Herald) -> None:
    assert herald.settings.governor_shards == SHARDS
    assert len(start_governors(SHARDS)) == SHARDS - 1  # the stack's shards 1.., found by name
    assert governor_name(0) == CONTROL_ACTOR
    handles = governor_handles(SHARDS)
    assert ray.get_actor(CONTROL_ACTOR, namespace=NAMESPACE)
    assert all("buckets" in h for h in ray.get([h.health.remote() for h in handles], timeout=60))
    sent = asyncio.run(_two_senders(seconds=3.0))
    # 40/s for 3 s, plus the burst of 10 held at the start; a client's unused block is the only slack
    assert 0.8 * 120 <= sent["t_hot"] <= 40 * 3 + 10
    assert sent["t_calm"] == sent["asked_calm"]  # another tenant, far under its limit: every message
    states = ray.get(handles[shard_for("t_hot", SHARDS)].states.remote())
    assert [s.tenant for s in states if s.channel is Channel.SMS and s.tenant == "t_hot"] == ["t_hot"]


async def _two_senders(seconds: float) -> dict[str, int]:
    senders = [lease_client(SHARDS), lease_client(SHARDS)]
    hot, calm = ("t_hot", Channel.SMS), ("t_calm", Channel.SMS)
    sent = {"t_hot": 0, "t_calm": 0, "asked_calm": 0}
    deadline = time.monotonic() + seconds
    step = 0
    while time.monotonic() < deadline:
        client = senders[step % 2]
        wants = {hot: Want(20, Rate(40, 10))}
        if step % 5 == 0:
            wants[calm] = Want(1, Rate(1000, 100))
            sent["asked_calm"] += 1
        grants = await client.acquire(wants)
        sent["t_hot"] += grants[hot].granted
        if calm in grants:
            sent["t_calm"] += grants[calm].granted
        step += 1
        await asyncio.sleep(0.01)
    return sent
