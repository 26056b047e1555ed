"""The senders' lease client on a fake clock: blocks cached, limits held across senders, no call while
blocked, a local fallback when the governor is down."""

from __future__ import annotations

from engine.channels import Channel
from engine.governance.buckets import Lease, LeaseRequest, Rate, TokenBuckets, shard_for
from engine.governance.leases import ClientOptions, Grant, LeaseClient, LocalLeaseSource, Want, take_granted
from tests.engine.test_governance_buckets import FakeClock

SMS = Channel.SMS


async def test_single_messages_are_served_from_leased_blocks_not_one_call_each() -> None:
    clock = FakeClock()
    source = LocalLeaseSource(TokenBuckets(clock=clock))
    client = LeaseClient([source], clock=clock)
    sent = 0
    for _ in range(500):  # one message every 10 ms: 100/s, under the limit
        grant = (await client.acquire({("t_a", SMS): Want(1, Rate(200, 20))}))[("t_a", SMS)]
        sent += grant.granted
        clock.advance(0.01)
    assert sent == 500
    assert source.calls <= 500 / 20  # a block of 0.2 s of the rate (40 tokens) lasts 40 messages


async def test_two_senders_on_one_governor_hold_the_tenant_to_its_rate() -> None:
    clock = FakeClock()
    source = LocalLeaseSource(TokenBuckets(clock=clock))
    senders = [LeaseClient([source], clock=clock) for _ in range(2)]
    sent = 0
    for step in range(2000):  # 20 s, each sender with 10 messages in hand every 10 ms
        client = senders[step % 2]
        sent += (await client.acquire({("t_a", SMS): Want(10, Rate(50, 10))}))[("t_a", SMS)].granted
        clock.advance(0.01)
    assert abs(sent - 50 * 20) <= 0.1 * 50 * 20


async def test_a_key_that_came_back_short_is_not_asked_for_until_its_token_is_due() -> None:
    clock = FakeClock()
    source = LocalLeaseSource(TokenBuckets(clock=clock))
    client = LeaseClient([source], clock=clock)
    key = ("t_a", SMS)
    first = (await client.acquire({key: Want(10, Rate(1, 2))}))[key]
    assert first.granted == 2 and first.retry_after_s is not None and first.retry_after_s > 0.9
    calls = source.calls
    clock.advance(0.5)
    second = (await client.acquire({key: Want(10, Rate(1, 2))}))[key]
    assert second.granted == 0 and abs(second.retry_after_s - 0.5) < 1e-6 and source.calls == calls  # type: ignore[operator]
    clock.advance(0.6)
    third = (await client.acquire({key: Want(10, Rate(1, 2))}))[key]
    assert third.granted == 1 and source.calls == calls + 1


async def test_unlimited_tenants_need_no_lease_unless_the_channel_is_shared() -> None:
    clock = FakeClock()
    source = LocalLeaseSource(TokenBuckets(clock=clock, capacity={SMS: Rate(10, 5)}))
    free = LeaseClient([source], clock=clock)
    assert (await free.acquire({("t_a", Channel.EMAIL): Want(1000, None)}))[("t_a", Channel.EMAIL)].granted == 1000
    assert source.calls == 0
    shared = LeaseClient([source], clock=clock, options=ClientOptions(shared_channels=frozenset({SMS})))
    assert (await shared.acquire({("t_a", SMS): Want(1000, None)}))[("t_a", SMS)].granted == 5
    assert source.calls == 1


async def test_every_key_of_a_batch_goes_in_one_call_per_shard() -> None:
    clock = FakeClock()
    shards = [LocalLeaseSource(TokenBuckets(clock=clock)) for _ in range(2)]
    client = LeaseClient(shards, clock=clock)
    tenants = [f"t_{i}" for i in range(10)]
    grants = await client.acquire({(t, SMS): Want(3, Rate(10, 10)) for t in tenants})
    assert all(g.granted == 3 for g in grants.values())
    assert [s.calls for s in shards] == [1, 1]
    assert {t for t in tenants if shard_for(t, 2) == 0} == {b.tenant for b in shards[0].buckets.states()}


async def test_unused_tokens_go_back_to_the_governor() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    client = LeaseClient([LocalLeaseSource(buckets)], clock=clock, options=ClientOptions(hold_s=0.5))
    key = ("t_a", SMS)
    slow = Want(1, Rate(0.001, 50))  # next to no refill: the bucket's tokens show what was taken
    await client.acquire({key: slow})  # 1 needed + a block of 1: 2 leased, 1 held
    assert round(buckets.states()[0].tokens) == 48
    clock.advance(1.0)  # the held token expires
    await client.acquire({key: slow})  # gives the held one back, leases 2 again
    assert round(buckets.states()[0].tokens) == 47


class DownSource:
    calls = 0

    async def lease(self, requests: list[LeaseRequest]) -> list[Lease]:
        self.calls += 1
        raise ConnectionError("governor gone")


async def test_an_unreachable_governor_falls_back_to_a_share_of_the_rate() -> None:
    clock = FakeClock()
    client = LeaseClient([DownSource()], clock=clock, options=ClientOptions(fallback_share=0.5))
    sent = 0
    for _ in range(1000):  # 10 s
        sent += (await client.acquire({("t_a", SMS): Want(10, Rate(40, 10))}))[("t_a", SMS)].granted
        clock.advance(0.01)
    assert abs(sent - 20 * 10) <= 0.1 * 20 * 10 + 5  # half the rate (plus the half burst at the start)


def test_a_batch_is_split_by_its_grants_in_batch_order() -> None:
    items = [("t_a", 1), ("t_b", 2), ("t_a", 3), ("t_a", 4), ("t_b", 5)]
    grants = {("t_a", SMS): Grant(2, 0.5), ("t_b", SMS): Grant(2)}
    now, later = take_granted(items, lambda i: (i[0], SMS), grants)
    assert now == [("t_a", 1), ("t_b", 2), ("t_a", 3), ("t_b", 5)]
    assert later == [(("t_a", 4), 0.5)]
