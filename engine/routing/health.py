"""The health board: every breaker, fed by send results in batches, read as a versioned snapshot.

One board is the truth for the whole cluster (the control actor holds it). Senders never ask it about
one message: they count results locally in a :class:`TallyBuffer`, hand the tallies over about once a
second, and route from the :class:`HealthSnapshot` they get back. The board also learns each provider's
recent reliability and call latency, and counts this month's sends per provider account (for volume
price tiers; the counts not yet persisted are kept for :class:`~engine.routing.volumes.VolumeKeeper`).

A provider account's health checks (where the provider has a cheap one) feed its own breaker, at the
region :data:`ACCOUNT_REGION`: one account serves every region, so routing treats the account breaker
as a filter on top of the per-region breakers that send results feed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.errors import DispatchError, NotAttemptedError

from .breaker import BreakerPolicy, BreakerState, CircuitBreaker, SlidingCounter

log = logging.getLogger(__name__)

#: The owner of the platform's own provider accounts (a tenant's own credentials are owned by its slug).
PLATFORM = "platform"
#: The region of a provider account's breaker, fed by health checks only.
ACCOUNT_REGION = "*"
#: How far back reliability is learned from.
RECENT_WINDOW_S = 600.0
#: Weight of each new call in the latency average.
LATENCY_ALPHA = 0.2
#: A closed breaker nobody reported on for this long is forgotten (tenant accounts come and go).
IDLE_EVICT_S = 3600.0
#: Failures that are the message's own, not the provider's: the provider answered, so it is healthy.
_HEALTHY_FAILURES = frozenset({"permanent", "bad_recipient"})


class BreakerKey(NamedTuple):
    """What one breaker guards: a provider on a channel, in a region, with one owner's credentials."""

    provider: str
    channel: str
    region: str
    owner: str = PLATFORM


def error_label(error: DispatchError) -> str:
    """``"retryable 500: Internal Server Error"``: the class, the provider's code and the (already
    redacted) detail, short enough to show on an admin page."""
    code = f" {error.code}" if error.code else ""
    detail = f": {error.detail}" if error.detail else ""
    return f"{error.failure_class.value}{code}{detail}"[:200]


@dataclass(slots=True)
class Tally:
    """What one sender saw of one breaker's sends since it last reported."""

    key: BreakerKey
    ok: int = 0
    failed: int = 0
    trailing_failures: int = 0
    latency_ms_sum: float = 0.0
    latency_calls: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def add(self, ok: bool, at: float, error: str | None = None) -> None:
        if ok:
            self.ok += 1
            self.trailing_failures = 0
        else:
            self.failed += 1
            self.trailing_failures += 1
            self.last_error, self.last_error_at = error, at

    def merge(self, other: Tally) -> None:
        self.trailing_failures = other.trailing_failures if other.ok else self.trailing_failures + other.failed
        self.ok += other.ok
        self.failed += other.failed
        self.latency_ms_sum += other.latency_ms_sum
        self.latency_calls += other.latency_calls
        if other.last_error_at is not None:
            self.last_error, self.last_error_at = other.last_error, other.last_error_at


class TallyBuffer:
    """A sender's results between two reports (plain counters: nothing here costs more than a dict hit)."""

    def __init__(self) -> None:
        self._tallies: dict[BreakerKey, Tally] = {}

    def _tally(self, key: BreakerKey) -> Tally:
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = Tally(key)
        return tally

    def result(self, key: BreakerKey, at: float, error: DispatchError | None = None) -> None:
        """One message's outcome at this provider; a per-message failure of the recipient's own
        (permanent, bad recipient) says the provider works, so it counts as a success here."""
        self.results(key, at, (error,))

    def results(self, key: BreakerKey, at: float, errors: Iterable[DispatchError | None]) -> None:
        """The outcomes of one call's messages, in order (see :meth:`result`)."""
        tally = self._tally(key)
        for error in errors:
            if error is None or error.failure_class.value in _HEALTHY_FAILURES:
                tally.add(True, at)
            elif not isinstance(error, NotAttemptedError):  # never started: the provider did not see it
                tally.add(False, at, error_label(error))

    def call(self, key: BreakerKey, latency_ms: float) -> None:
        """One provider call (a batch) and how long it took."""
        tally = self._tally(key)
        tally.latency_ms_sum += latency_ms
        tally.latency_calls += 1

    def extend(self, tallies: Iterable[Tally]) -> None:
        """Put back tallies a failed report could not deliver."""
        for t in tallies:
            self._tally(t.key).merge(t)

    def drain(self) -> list[Tally]:
        out = list(self._tallies.values())
        self._tallies.clear()
        return out

    def __bool__(self) -> bool:
        return bool(self._tallies)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One health check of the platform's account at ``provider`` on ``channel``."""

    channel: str
    provider: str
    at: float
    error: DispatchError | None = None

    @property
    def key(self) -> BreakerKey:
        return BreakerKey(self.provider, self.channel, ACCOUNT_REGION, PLATFORM)


#: (month ``YYYY-MM``, channel, provider, owner) -> sends: what the board counted and has not handed over.
VolumeDeltas = dict[tuple[str, str, str, str], int]


@dataclass(frozen=True, slots=True)
class KeyHealth:
    state: BreakerState
    error_rate: float  #: failures / sends in the breaker's window
    window_requests: int
    consecutive_failures: int
    latency_ms: float | None  #: recent provider call latency (moving average)
    recent_ok: int  #: sends in the last RECENT_WINDOW_S, for the learned reliability
    recent_failed: int
    last_error: str | None = None
    last_error_at: float | None = None
    opened_at: float | None = None
    retry_at: float | None = None  #: when an open breaker lets probes through


@dataclass(frozen=True, slots=True)
class Transition:
    key: BreakerKey
    before: BreakerState
    after: BreakerState
    at: float


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    version: int
    taken_at: float
    month: str
    keys: Mapping[BreakerKey, KeyHealth] = field(default_factory=dict)
    #: (channel, provider, owner) -> sends accepted this month, for volume price tiers.
    volumes: Mapping[tuple[str, str, str], int] = field(default_factory=dict)

    def get(self, key: BreakerKey) -> KeyHealth | None:
        return self.keys.get(key)

    def volume(self, channel: str, provider: str, owner: str) -> int:
        return self.volumes.get((channel, provider, owner), 0)

    def circuit_gauges(self) -> dict[tuple[str, str], float]:
        """``provider_circuit_open{provider,channel}``: 1 while a platform breaker of that provider is
        open or probing. Tenants' own accounts are left out: one tenant's bad key is not an outage."""
        gauges: dict[tuple[str, str], float] = {}
        for key, health in self.keys.items():
            if key.owner != PLATFORM:
                continue
            value = 0.0 if health.state is BreakerState.CLOSED else 1.0
            gauges[(key.provider, key.channel)] = max(value, gauges.get((key.provider, key.channel), 0.0))
        return gauges


EMPTY_SNAPSHOT = HealthSnapshot(version=0, taken_at=0.0, month="")


@dataclass(slots=True)
class _Entry:
    breaker: CircuitBreaker
    recent: SlidingCounter = field(default_factory=lambda: SlidingCounter(RECENT_WINDOW_S, 10.0))
    latency_ms: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_seen: float = 0.0


def _month(now: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(now))


PolicyLookup = Callable[[str, str], BreakerPolicy]


class HealthBoard:
    """Every breaker of the cluster. ``policy(channel, provider)`` gives a provider's thresholds."""

    def __init__(self, policy: PolicyLookup | None = None, clock: Callable[[], float] = time.time) -> None:
        self._policy: PolicyLookup = policy or (lambda channel, provider: BreakerPolicy())
        self.clock = clock
        self.version = 0
        self._entries: dict[BreakerKey, _Entry] = {}
        self._month = _month(clock())
        self._volumes: dict[tuple[str, str, str], int] = {}
        self._unsaved: VolumeDeltas = {}

    def policy(self, channel: str, provider: str) -> BreakerPolicy:
        return self._policy(channel, provider)

    def configure(self, policy: PolicyLookup) -> None:
        """New thresholds for every breaker (the routing table was reloaded)."""
        self._policy = policy
        for key, entry in self._entries.items():
            entry.breaker.reconfigure(policy(key.channel, key.provider))
        self.version += 1

    def seed_volumes(self, month: str, volumes: Mapping[tuple[str, str, str], int]) -> None:
        """This month's sends persisted before this board started: added to what it counted since (none
        of which was handed over yet: see :class:`~engine.routing.volumes.VolumeKeeper`)."""
        if month != self._month:
            return
        for k, n in volumes.items():
            self._volumes[k] = n + self._unsaved.get((month, *k), 0)
        self.version += 1

    def take_volume_deltas(self) -> VolumeDeltas:
        """The sends counted since the last call, by month (to persist them)."""
        out, self._unsaved = self._unsaved, {}
        return out

    def return_volume_deltas(self, deltas: Mapping[tuple[str, str, str, str], int]) -> None:
        """Deltas that could not be persisted, to hand over again next time."""
        for k, n in deltas.items():
            self._unsaved[k] = self._unsaved.get(k, 0) + n

    def record_checks(self, results: Iterable[CheckResult]) -> list[Transition]:
        """Count health checks on the accounts' breakers; the state changes they caused."""
        now = self.clock()
        changes: list[Transition] = []
        for r in results:
            entry = self._entry(r.key, now)
            entry.last_seen = now
            if r.error is not None:
                entry.last_error, entry.last_error_at = f"health check: {error_label(r.error)}"[:200], r.at
            before = entry.breaker.state
            if entry.breaker.tick(now) is not None:  # the cool-down is over: this check is the probe
                self._changed(r.key, before, entry.breaker.state, now, entry)
                before = entry.breaker.state
            after = entry.breaker.check(now, r.error is None)
            if after is not None:
                changes.append(self._changed(r.key, before, after, now, entry))
            self.version += 1
        return changes

    def state(self, key: BreakerKey) -> BreakerState:
        """A breaker's state now (closed when the board has none)."""
        entry = self._entries.get(key)
        if entry is None:
            return BreakerState.CLOSED
        now = self.clock()
        before = entry.breaker.state
        if entry.breaker.tick(now) is not None:
            self._changed(key, before, entry.breaker.state, now, entry)
            self.version += 1
        return entry.breaker.state

    def apply(self, tallies: Iterable[Tally]) -> list[Transition]:
        """Count a batch of tallies; the state changes it caused (each logged once, here)."""
        now = self.clock()
        self._roll_month(now)
        changes: list[Transition] = []
        applied = False
        for t in tallies:
            applied = True
            entry = self._entry(t.key, now)
            entry.last_seen = now
            if t.last_error_at is not None:
                entry.last_error, entry.last_error_at = t.last_error, t.last_error_at
            before = entry.breaker.state
            if entry.breaker.tick(now) is not None:  # the cool-down ended before these results came in
                changes.append(self._changed(t.key, before, entry.breaker.state, now, entry))
                before = entry.breaker.state
            after = entry.breaker.record(now, t.ok, t.failed, t.trailing_failures)
            if after is not None:
                changes.append(self._changed(t.key, before, after, now, entry))
            entry.recent.add(now, t.ok, t.failed)
            if t.latency_calls:
                mean = t.latency_ms_sum / t.latency_calls
                entry.latency_ms = (
                    mean if entry.latency_ms is None else entry.latency_ms + LATENCY_ALPHA * (mean - entry.latency_ms)
                )
            if t.ok:
                volume_key = (t.key.channel, t.key.provider, t.key.owner)
                self._volumes[volume_key] = self._volumes.get(volume_key, 0) + t.ok
                unsaved_key = (self._month, *volume_key)
                self._unsaved[unsaved_key] = self._unsaved.get(unsaved_key, 0) + t.ok
        if applied or changes:
            self.version += 1
        return changes

    def lease_probes(self, key: BreakerKey, wanted: int) -> int:
        """How many of ``wanted`` sends may go to ``key`` now (all when closed, probes when half-open)."""
        now = self.clock()
        entry = self._entry(key, now)
        before = entry.breaker.state
        granted = entry.breaker.lease(now, wanted)
        if entry.breaker.state is not before:
            self._changed(key, before, entry.breaker.state, now, entry)
            self.version += 1
        return granted

    def snapshot(self) -> HealthSnapshot:
        now = self.clock()
        self._roll_month(now)
        keys: dict[BreakerKey, KeyHealth] = {}
        for key, entry in list(self._entries.items()):
            before = entry.breaker.state
            if entry.breaker.tick(now) is not None:
                self._changed(key, before, entry.breaker.state, now, entry)
                self.version += 1
            ok, failed = entry.recent.totals(now)
            idle = not (ok or failed) and now - entry.last_seen > IDLE_EVICT_S
            if idle and entry.breaker.state is BreakerState.CLOSED:
                del self._entries[key]
                continue
            keys[key] = self._health(entry, now, ok, failed)
        return HealthSnapshot(self.version, now, self._month, keys, dict(self._volumes))

    # -- internals ---------------------------------------------------------------------------------

    def _entry(self, key: BreakerKey, now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(CircuitBreaker(self._policy(key.channel, key.provider)))
            entry.last_seen = now
        return entry

    def _roll_month(self, now: float) -> None:
        month = _month(now)
        if month != self._month:
            self._month = month
            self._volumes.clear()

    @staticmethod
    def _health(entry: _Entry, now: float, ok: int, failed: int) -> KeyHealth:
        breaker = entry.breaker
        rate, total = breaker.error_rate(now)
        return KeyHealth(
            state=breaker.state,
            error_rate=round(rate, 4),
            window_requests=total,
            consecutive_failures=breaker.consecutive,
            latency_ms=None if entry.latency_ms is None else round(entry.latency_ms, 1),
            recent_ok=ok,
            recent_failed=failed,
            last_error=entry.last_error,
            last_error_at=entry.last_error_at,
            opened_at=breaker.opened_at,
            retry_at=breaker.retry_at() if breaker.state is BreakerState.OPEN else None,
        )

    @staticmethod
    def _changed(key: BreakerKey, before: BreakerState, after: BreakerState, now: float, entry: _Entry) -> Transition:
        where = f"{key.provider}/{key.channel} region={key.region} owner={key.owner}"
        if after is BreakerState.OPEN:
            log.warning("circuit %s: %s -> open (last error: %s)", where, before.value, entry.last_error or "none")
        else:
            log.info("circuit %s: %s -> %s", where, before.value, after.value)
        return Transition(key, before, after, now)
