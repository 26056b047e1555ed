"""Active health checks: each platform provider account whose driver has a cheap check is checked on a
timer, and the results feed its account breaker on the :class:`~engine.routing.health.HealthBoard`.

A check is due every ``check_s`` of the provider's breaker policy (the routing table), else every
``default_s`` (HERALD_HEALTH_CHECK_SECONDS); 0 turns it off. An account breaker that has gone half-open
is checked at once: that check is its probe. Checks never run per message: the control actor
calls :meth:`ProviderChecker.run_due` about once a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from engine.channels import Channel
from engine.delivery import HealthChecked
from engine.errors import DispatchError, RetryableError

from .breaker import BreakerState
from .health import CheckResult, HealthBoard, Transition

log = logging.getLogger(__name__)

#: The longest a check may take before it counts as failed.
CHECK_TIMEOUT_S = 10.0


class ProviderChecker:
    def __init__(
        self,
        board: HealthBoard,
        targets: Mapping[tuple[Channel, str], HealthChecked],
        default_s: float,
        *,
        timeout_s: float = CHECK_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board = board
        self.targets = dict(targets)
        self.default_s = default_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._last: dict[tuple[Channel, str], float] = {}

    def interval(self, channel: Channel, provider: str) -> float:
        """Seconds between checks of this account (0: not checked)."""
        configured = self.board.policy(channel.value, provider).check_s
        return max(0.0, self.default_s if configured is None else configured)

    def due(self) -> list[tuple[Channel, str]]:
        now = self.clock()
        out = []
        for target in self.targets:
            every = self.interval(*target)
            if not every:
                continue
            last = self._last.get(target)
            probing = self.board.state(CheckResult(target[0].value, target[1], now).key) is BreakerState.HALF_OPEN
            if last is None or now - last >= every or probing:
                out.append(target)
        return out

    async def run_due(self) -> list[Transition]:
        """Check every account that is due, concurrently; the breaker changes the results caused."""
        due = self.due()
        if not due:
            return []
        results = await asyncio.gather(*(self._check(channel, provider) for channel, provider in due))
        return self.board.record_checks(results)

    async def _check(self, channel: Channel, provider: str) -> CheckResult:
        self._last[(channel, provider)] = self.clock()
        error: DispatchError | None = None
        try:
            await asyncio.wait_for(self.targets[(channel, provider)].check_health(), self.timeout_s)
        except DispatchError as err:
            error = err
        except TimeoutError:
            error = RetryableError(f"health check took over {self.timeout_s:g}s", provider=provider, code="timeout")
        except Exception as err:  # a driver's bug must not stop the other checks
            log.warning("health check of %s/%s raised %s", provider, channel.value, type(err).__name__)
            error = RetryableError(f"health check raised {type(err).__name__}", provider=provider, code="check")
        return CheckResult(channel.value, provider, self.clock(), error)

    async def aclose(self) -> None:
        for target in self.targets.values():
            close = getattr(target, "aclose", None)
            if close is not None:
                await close()
