"""Circuit breakers and the health board, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from engine.errors import BadRecipientError, NotAttemptedError, ProviderDownError, RetryableError
from engine.routing import PLATFORM, BreakerKey, BreakerPolicy, BreakerState, CircuitBreaker, HealthBoard, TallyBuffer


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


POLICY = BreakerPolicy(
    window_s=60, min_requests=10, error_rate=0.5, consecutive_failures=5, cooldown_s=30, probes=2, probe_lease_s=10
)
KEY = BreakerKey("sendgrid", "email", "eu", PLATFORM)


class TestBreaker:
    def test_consecutive_failures_open_it(self) -> None:
        b, clock = CircuitBreaker(POLICY), Clock()
        for _ in range(4):
            assert b.record(clock(), 0, 1, 1) is None
        assert b.record(clock(), 0, 1, 1) is BreakerState.OPEN
        assert b.lease(clock(), 10) == 0

    def test_a_success_resets_the_run(self) -> None:
        b, clock = CircuitBreaker(POLICY), Clock()
        b.record(clock(), 0, 4, 4)
        b.record(clock(), 1, 0, 0)
        b.record(clock(), 0, 4, 4)
        assert b.state is BreakerState.CLOSED

    def test_error_rate_over_the_window_opens_it(self) -> None:
        b, clock = CircuitBreaker(BreakerPolicy(consecutive_failures=0, min_requests=10, error_rate=0.5)), Clock()
        b.record(clock(), 5, 4, 0)  # 4 of 9: below the minimum count and the rate
        assert b.state is BreakerState.CLOSED
        assert b.record(clock(), 0, 1, 1) is BreakerState.OPEN  # 5 of 10 failed

    def test_old_failures_slide_out_of_the_window(self) -> None:
        b, clock = CircuitBreaker(BreakerPolicy(consecutive_failures=0, min_requests=10, window_s=60)), Clock()
        b.record(clock(), 0, 9, 0)
        clock.advance(61)
        b.record(clock(), 9, 1, 0)
        assert b.state is BreakerState.CLOSED and b.error_rate(clock())[0] == pytest.approx(0.1)

    def test_half_open_after_cooldown_leases_a_few_probes(self) -> None:
        b, clock = CircuitBreaker(POLICY), Clock()
        b.record(clock(), 0, 5, 5)
        clock.advance(29)
        assert b.lease(clock(), 5) == 0 and b.state is BreakerState.OPEN
        clock.advance(1)
        assert b.lease(clock(), 5) == 2 and b.state is BreakerState.HALF_OPEN
        assert b.lease(clock(), 5) == 0  # both permits are out
        clock.advance(10)
        assert b.lease(clock(), 1) == 1  # unreported permits are handed out again

    def test_probe_success_closes_and_failure_reopens(self) -> None:
        b, clock = CircuitBreaker(POLICY), Clock()
        b.record(clock(), 0, 5, 5)
        clock.advance(30)
        b.lease(clock(), 1)
        assert b.record(clock(), 0, 1, 1) is BreakerState.OPEN and b.opened_at == clock()
        clock.advance(30)
        b.lease(clock(), 1)
        assert b.record(clock(), 1, 0, 0) is BreakerState.CLOSED
        assert b.lease(clock(), 100) == 100 and b.consecutive == 0

    def test_results_of_sends_started_before_it_opened_are_ignored(self) -> None:
        b, clock = CircuitBreaker(POLICY), Clock()
        b.record(clock(), 0, 5, 5)
        assert b.record(clock(), 3, 0, 0) is None and b.state is BreakerState.OPEN


class TestTallies:
    def test_trailing_failures_and_healthy_permanent_failures(self) -> None:
        buf, clock = TallyBuffer(), Clock()
        buf.result(KEY, clock(), RetryableError("500", code="500"))
        buf.result(KEY, clock())
        buf.result(KEY, clock(), BadRecipientError("no such user"))  # the provider works
        buf.result(KEY, clock(), ProviderDownError("401", code="401"))
        buf.result(KEY, clock(), RetryableError("503", code="503"))
        buf.result(KEY, clock(), NotAttemptedError("stopped at the 401", code="401"))  # not sent: not counted
        (tally,) = buf.drain()
        assert (tally.ok, tally.failed, tally.trailing_failures) == (2, 3, 2)
        assert tally.last_error == "retryable 503: 503"
        assert not buf


class TestBoard:
    def test_batches_open_the_breaker_once_and_log_it_once(self, caplog: pytest.LogCaptureFixture) -> None:
        clock = Clock()
        board = HealthBoard(lambda channel, provider: POLICY, clock)
        buf = TallyBuffer()
        for _ in range(3):
            buf.result(KEY, clock(), RetryableError("boom", code="500"))
        with caplog.at_level(logging.INFO, logger="engine.routing.health"):
            assert board.apply(buf.drain()) == []
            for _ in range(4):
                buf.result(KEY, clock(), RetryableError("boom", code="500"))
            changes = board.apply(buf.drain())
            board.apply([])
            board.snapshot()
        assert [(c.before, c.after) for c in changes] == [(BreakerState.CLOSED, BreakerState.OPEN)]
        opened = [r for r in caplog.records if "-> open" in r.getMessage()]
        assert len(opened) == 1 and "retryable 500" in opened[0].getMessage()
        snap = board.snapshot()
        health = snap.get(KEY)
        assert health is not None and health.state is BreakerState.OPEN and health.retry_at == clock() + 30
        assert snap.circuit_gauges() == {("sendgrid", "email"): 1.0}

    def test_owners_have_their_own_breakers(self) -> None:
        clock = Clock()
        board = HealthBoard(lambda c, p: POLICY, clock)
        tenant_key = KEY._replace(owner="t_bad")
        buf = TallyBuffer()
        for _ in range(5):
            buf.result(tenant_key, clock(), ProviderDownError("bad key", code="401"))
        buf.result(KEY, clock())
        board.apply(buf.drain())
        snap = board.snapshot()
        assert snap.get(tenant_key).state is BreakerState.OPEN  # type: ignore[union-attr]
        assert snap.get(KEY).state is BreakerState.CLOSED  # type: ignore[union-attr]
        assert snap.circuit_gauges() == {("sendgrid", "email"): 0.0}  # a tenant's key is not an outage

    def test_snapshot_versions_move_with_news_and_volumes_count_this_month(self) -> None:
        clock = Clock()
        board = HealthBoard(clock=clock)
        v0 = board.snapshot().version
        assert board.snapshot().version == v0
        buf = TallyBuffer()
        for _ in range(3):
            buf.result(KEY, clock())
        buf.call(KEY, 120.0)
        board.apply(buf.drain())
        snap = board.snapshot()
        assert snap.version > v0 and snap.volume("email", "sendgrid", PLATFORM) == 3
        assert snap.get(KEY).latency_ms == 120.0  # type: ignore[union-attr]
        clock.advance(40 * 24 * 3600)  # next month
        assert board.snapshot().volume("email", "sendgrid", PLATFORM) == 0

    def test_half_open_shows_after_cooldown_and_lease_comes_from_the_board(self) -> None:
        clock = Clock()
        board = HealthBoard(lambda c, p: POLICY, clock)
        buf = TallyBuffer()
        for _ in range(5):
            buf.result(KEY, clock(), RetryableError("boom"))
        board.apply(buf.drain())
        clock.advance(31)
        assert board.snapshot().get(KEY).state is BreakerState.HALF_OPEN  # type: ignore[union-attr]
        assert board.lease_probes(KEY, 10) == 2
        buf.result(KEY, clock())
        board.apply(buf.drain())
        assert board.snapshot().get(KEY).state is BreakerState.CLOSED  # type: ignore[union-attr]

    def test_a_failed_probe_logs_half_open_to_open(self, caplog: pytest.LogCaptureFixture) -> None:
        clock = Clock()
        board = HealthBoard(lambda c, p: POLICY, clock)
        buf = TallyBuffer()
        for _ in range(5):
            buf.result(KEY, clock(), RetryableError("boom"))
        board.apply(buf.drain())
        clock.advance(31)  # cool-down over, and no snapshot taken before the probe's result arrives
        buf.result(KEY, clock(), RetryableError("still down"))
        with caplog.at_level(logging.INFO, logger="engine.routing.health"):
            changes = board.apply(buf.drain())
        assert [(c.before, c.after) for c in changes] == [
            (BreakerState.OPEN, BreakerState.HALF_OPEN),
            (BreakerState.HALF_OPEN, BreakerState.OPEN),
        ]
        messages = [r.getMessage() for r in caplog.records]
        assert not any(": open -> open" in m for m in messages), messages

    def test_reconfigure_applies_new_thresholds(self) -> None:
        clock = Clock()
        board = HealthBoard(lambda c, p: POLICY, clock)
        buf = TallyBuffer()
        buf.result(KEY, clock(), RetryableError("x"))
        board.apply(buf.drain())
        board.configure(lambda c, p: BreakerPolicy(consecutive_failures=2))
        buf.result(KEY, clock(), RetryableError("x"))
        board.apply(buf.drain())
        assert board.snapshot().get(KEY).state is BreakerState.OPEN  # type: ignore[union-attr]
