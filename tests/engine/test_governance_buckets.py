"""Token buckets on a fake clock: the rate is held, bursts, fair shares of a channel's capacity."""

from __future__ import annotations

import pytest

from engine.channels import Channel, Priority
from engine.governance.buckets import FairShareOptions, LeaseRequest, Rate, TokenBuckets, shard_for, water_fill

STEP_S = 0.01


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(buckets: TokenBuckets, clock: FakeClock, wants: dict[str, LeaseRequest], seconds: float) -> dict[str, int]:
    """Every step, every tenant asks for its ``want``; returns the tokens each was granted."""
    got = dict.fromkeys(wants, 0)
    for _ in range(round(seconds / STEP_S)):
        for lease in buckets.lease(list(wants.values())):
            got[lease.tenant] += lease.granted
        clock.advance(STEP_S)
    return got


def ask(tenant: str, want: int, rate: Rate | None = None, **kw: object) -> LeaseRequest:
    return LeaseRequest(tenant, Channel.SMS, want, rate, **kw)  # type: ignore[arg-type]


def test_rate_is_held_within_ten_percent_over_twenty_seconds() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    got = run(buckets, clock, {"t_a": ask("t_a", 5, Rate(50, 10))}, 20.0)
    assert abs(got["t_a"] - 50 * 20) <= 0.1 * 50 * 20
    assert got["t_a"] <= 50 * 20 + 10  # never more than the rate plus one burst


def test_a_full_bucket_gives_its_burst_then_says_when_the_next_token_is_due() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    (first,) = buckets.lease([ask("t_a", 100, Rate(50, 10))])
    assert first.granted == 10 and first.retry_after_s == pytest.approx(1 / 50)
    (empty,) = buckets.lease([ask("t_a", 100, Rate(50, 10))])
    assert empty.granted == 0 and empty.retry_after_s == pytest.approx(1 / 50)
    clock.advance(1 / 50)
    (one,) = buckets.lease([ask("t_a", 100, Rate(50, 10))])
    assert one.granted == 1
    clock.advance(60)  # a long pause refills up to the burst, not beyond
    (again,) = buckets.lease([ask("t_a", 100, Rate(50, 10))])
    assert again.granted == 10


def test_everything_wanted_is_granted_with_no_retry_when_the_bucket_has_it() -> None:
    buckets = TokenBuckets(clock=FakeClock())
    (lease,) = buckets.lease([ask("t_a", 3, Rate(50, 10))])
    assert lease.granted == 3 and lease.retry_after_s is None


def test_an_unlimited_tenant_on_an_unshared_channel_gets_all_it_asks() -> None:
    buckets = TokenBuckets(clock=FakeClock())
    (lease,) = buckets.lease([ask("t_a", 10_000)])
    assert lease.granted == 10_000 and lease.retry_after_s is None


def test_returned_tokens_go_back_into_the_bucket() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    buckets.lease([ask("t_a", 10, Rate(1, 10))])
    (lease,) = buckets.lease([ask("t_a", 10, Rate(1, 10), returned=4)])
    assert lease.granted == 4


def test_a_newer_config_version_changes_the_rate_an_older_one_does_not() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    buckets.lease([ask("t_a", 0, Rate(10, 10), config_version=2)])
    buckets.lease([ask("t_a", 0, Rate(100, 100), config_version=1)])  # a sender with an older copy
    assert buckets.states()[0].rate_per_second == 10
    buckets.lease([ask("t_a", 0, Rate(20, 5), config_version=3)])
    state = buckets.states()[0]
    assert state.rate_per_second == 20 and state.tokens == 5  # the smaller burst caps what was held


def test_a_tenant_at_its_limit_leaves_another_unaffected() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock)
    got = run(buckets, clock, {"t_hot": ask("t_hot", 50, Rate(20, 5)), "t_calm": ask("t_calm", 1, Rate(500, 50))}, 10)
    assert got["t_calm"] == round(10 / STEP_S)  # every token it asked for, every step
    assert abs(got["t_hot"] - 200) <= 20


def test_three_tenants_two_at_their_limits_the_third_gets_the_rest_of_the_capacity() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock, capacity={Channel.SMS: Rate(100, 20)})
    wants = {
        "t_a": ask("t_a", 20, Rate(20, 5)),
        "t_b": ask("t_b", 20, Rate(30, 5)),
        "t_c": ask("t_c", 20),  # no limit of its own: its share of the channel
    }
    got = run(buckets, clock, wants, 20.0)
    assert abs(got["t_a"] - 20 * 20) <= 0.1 * 20 * 20
    assert abs(got["t_b"] - 30 * 20) <= 0.1 * 30 * 20
    assert abs(got["t_c"] - 50 * 20) <= 0.1 * 50 * 20
    assert sum(got.values()) <= 100 * 20 + 20 + 5 + 5 + 20  # the capacity, plus the bursts held at the start


def test_equal_demand_shares_a_channel_equally_and_a_light_tenant_gets_what_it_asks() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock, capacity={Channel.SMS: Rate(90, 10)})
    got = run(buckets, clock, {t: ask(t, 10) for t in ("t_a", "t_b", "t_c")}, 20.0)
    for tenant in got:
        assert abs(got[tenant] - 30 * 20) <= 0.1 * 30 * 20
    clock.advance(10)
    light = ask("t_c", 1, Rate(5, 1))  # asks for 1 token every 0.2 s: 5/s
    got = dict.fromkeys(("t_a", "t_b", "t_c"), 0)
    for step in range(2500):  # 5 s for its demand estimate to build up, then 20 s measured
        requests = [ask("t_a", 10), ask("t_b", 10)] + ([light] if step % 20 == 0 else [])
        for lease in buckets.lease(requests):
            got[lease.tenant] += lease.granted if step >= 500 else 0
        clock.advance(STEP_S)
    assert got["t_c"] >= 0.9 * 5 * 20
    for tenant in ("t_a", "t_b"):
        assert abs(got[tenant] - 42.5 * 20) <= 0.1 * 42.5 * 20


def test_high_priority_is_served_before_low_on_a_shared_channel() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock=clock, capacity={Channel.SMS: Rate(100, 10)})
    wants = {
        "t_otp": ask("t_otp", 1, priority=Priority.HIGH),  # 100/s asked: the whole channel
        "t_news": ask("t_news", 10, priority=Priority.LOW),
    }
    got = run(buckets, clock, wants, 10.0)
    assert got["t_otp"] >= 0.9 * 1000
    assert got["t_news"] <= 0.1 * 1000


def test_a_tenant_that_stops_asking_gives_up_its_share() -> None:
    clock = FakeClock()
    options = FairShareOptions(idle_s=1.0)
    buckets = TokenBuckets(clock=clock, capacity={Channel.SMS: Rate(100, 10)}, options=options)
    run(buckets, clock, {"t_a": ask("t_a", 10), "t_b": ask("t_b", 10)}, 5.0)
    got = run(buckets, clock, {"t_a": ask("t_a", 10)}, 10.0)
    assert got["t_a"] >= 0.9 * 100 * 10 - 100  # the whole channel once t_b is idle (after idle_s)


def test_water_fill_is_max_min_fair() -> None:
    assert water_fill({"a": 10, "b": float("inf"), "c": float("inf")}, 100) == {"a": 10, "b": 45, "c": 45}
    assert water_fill({"a": 10, "b": 20}, 100) == {"a": 10, "b": 20}
    assert water_fill({}, 100) == {}


def test_shard_for_is_stable_and_spreads_tenants() -> None:
    assert shard_for("t_001", 4) == shard_for("t_001", 4)
    assert {shard_for(f"t_{i:03d}", 4) for i in range(100)} == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        shard_for("t_001", 0)
