"""One circuit breaker: closed -> open -> half-open -> closed, on a sliding window of send results.

- **closed**: every result is counted in a window of ``window_s`` seconds (1 s buckets, so memory does
  not grow with traffic). It opens when ``consecutive_failures`` sends in a row failed, or when at least
  ``min_requests`` sends in the window failed at ``error_rate`` or more.
- **open**: nothing is sent for ``cooldown_s``; results still arriving from sends started earlier are
  ignored.
- **half-open**: after the cool-down, up to ``probes`` permits are leased to senders; a probe that
  succeeds closes the breaker, one that fails opens it again for another cool-down. A permit that is
  never reported back (its sender died) is given out again after ``probe_lease_s``.

A provider account's health checks feed a breaker of their own (:meth:`CircuitBreaker.check`): it opens
after ``check_failures`` failed checks in a row; once half-open, the next check is its probe.

Times are wall-clock seconds (``time.time()``), because snapshots cross processes and nodes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Thresholds of one provider's breakers (the routing table's ``breaker`` block)."""

    window_s: float = 60.0
    min_requests: int = 10
    error_rate: float = 0.5
    consecutive_failures: int = 5
    cooldown_s: float = 30.0
    probes: int = 3
    probe_lease_s: float = 15.0
    #: Seconds between health checks of the provider account; None: HERALD_HEALTH_CHECK_SECONDS; 0: off.
    check_s: float | None = None
    #: Failed health checks in a row that open the account's breaker.
    check_failures: int = 2


class SlidingCounter:
    """Successes and failures over the last ``window_s`` seconds, in one-second buckets."""

    __slots__ = ("_buckets", "bucket_s", "failures", "successes", "window_s")

    def __init__(self, window_s: float, bucket_s: float = 1.0) -> None:
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: deque[list[float]] = deque()  # [bucket start, ok, failed]
        self.successes = 0
        self.failures = 0

    def add(self, now: float, ok: int, failed: int) -> None:
        self._expire(now)
        start = now - now % self.bucket_s
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += ok
            self._buckets[-1][2] += failed
        else:
            self._buckets.append([start, ok, failed])
        self.successes += ok
        self.failures += failed

    def totals(self, now: float) -> tuple[int, int]:
        self._expire(now)
        return self.successes, self.failures

    def clear(self) -> None:
        self._buckets.clear()
        self.successes = self.failures = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._buckets and self._buckets[0][0] + self.bucket_s <= horizon:
            _, ok, failed = self._buckets.popleft()
            self.successes -= int(ok)
            self.failures -= int(failed)


@dataclass(slots=True)
class CircuitBreaker:
    policy: BreakerPolicy
    state: BreakerState = BreakerState.CLOSED
    consecutive: int = 0
    opened_at: float | None = None
    window: SlidingCounter = field(init=False)
    _leases: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.window = SlidingCounter(self.policy.window_s)

    def reconfigure(self, policy: BreakerPolicy) -> None:
        """New thresholds (a reloaded table); the counts so far are kept when the window length is."""
        if policy.window_s != self.policy.window_s:
            self.window = SlidingCounter(policy.window_s)
        self.policy = policy

    def retry_at(self) -> float | None:
        """When an open breaker starts letting probes through."""
        return None if self.opened_at is None else self.opened_at + self.policy.cooldown_s

    def tick(self, now: float) -> BreakerState | None:
        """Open -> half-open once the cool-down is over; the new state when it changed."""
        if self.state is BreakerState.OPEN and now >= (self.retry_at() or now):
            self.state = BreakerState.HALF_OPEN
            self._leases.clear()
            return self.state
        return None

    def record(self, now: float, ok: int, failed: int, trailing_failures: int) -> BreakerState | None:
        """Count one batch of results for this breaker; the new state when it changed.

        ``trailing_failures`` is how many of the batch's results, in order, failed after its last
        success (all of them when nothing succeeded).
        """
        self.tick(now)
        if self.state is BreakerState.OPEN:
            return None  # results of sends started before it opened
        if self.state is BreakerState.HALF_OPEN:
            if ok and not trailing_failures:
                return self._close()
            return self._open(now) if failed else None
        self.window.add(now, ok, failed)
        self.consecutive = trailing_failures if ok else self.consecutive + failed
        if self._should_open(now):
            return self._open(now)
        return None

    def check(self, now: float, ok: bool) -> BreakerState | None:
        """Count one health check of the account; the new state when it changed. While open the result is
        ignored (the cool-down runs); when half-open it decides."""
        self.tick(now)
        if self.state is BreakerState.OPEN:
            return None
        if self.state is BreakerState.HALF_OPEN:
            return self._close() if ok else self._open(now)
        self.consecutive = 0 if ok else self.consecutive + 1
        if self.consecutive >= max(1, self.policy.check_failures):
            return self._open(now)
        return None

    def lease(self, now: float, wanted: int) -> int:
        """Permits to send ``wanted`` messages now: all of them when closed, a few probes when
        half-open, none when open."""
        self.tick(now)
        if self.state is BreakerState.CLOSED:
            return wanted
        if self.state is BreakerState.OPEN:
            return 0
        self._leases = [t for t in self._leases if now - t < self.policy.probe_lease_s]
        granted = max(0, min(wanted, self.policy.probes - len(self._leases)))
        self._leases.extend([now] * granted)
        return granted

    def error_rate(self, now: float) -> tuple[float, int]:
        ok, failed = self.window.totals(now)
        total = ok + failed
        return (failed / total if total else 0.0), total

    def _should_open(self, now: float) -> bool:
        p = self.policy
        if p.consecutive_failures and self.consecutive >= p.consecutive_failures:
            return True
        rate, total = self.error_rate(now)
        return total >= p.min_requests and rate >= p.error_rate

    def _open(self, now: float) -> BreakerState:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self._leases.clear()
        return self.state

    def _close(self) -> BreakerState:
        self.state = BreakerState.CLOSED
        self.opened_at = None
        self.consecutive = 0
        self.window.clear()
        self._leases.clear()
        return self.state
