"""The retry policy, as data: what a classified failure leads to.

- Retryable: back off 10 s / 60 s / 5 min (with jitter); after the last delay the message is dead-lettered.
- Throttled: the provider's ``retry_after`` wins over the backoff; it counts as an attempt.
- ProviderDown with no other provider left (a round in which every candidate was down, open or failing):
  like Retryable, the round uses one attempt, so a route that stays down ends ``dead`` (replayable).
  Failing over to the next provider within a round is free: the dispatcher asks this policy only when
  the round is over.
- Permanent: ``failed`` at once; BadRecipient likewise, and the address is suppressed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from engine.errors import DispatchError, FailureClass


class Action(StrEnum):
    RETRY = "retry"
    FAIL = "fail"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_s: float = 0.0
    refund_attempt: bool = False
    suppress: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    delays_s: tuple[float, ...] = (10.0, 60.0, 300.0)
    #: +/- this fraction of each delay, so a burst of failures does not retry in lockstep.
    jitter: float = 0.2
    max_retry_after_s: float = 3600.0

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s) + 1

    def backoff_s(self, attempt_no: int, rng: random.Random | None = None) -> float:
        base = self.delays_s[min(attempt_no, len(self.delays_s)) - 1]
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))

    def decide(self, error: DispatchError, attempt_no: int, rng: random.Random | None = None) -> Decision:
        """``attempt_no`` counts from 1 and includes the attempt that just failed."""
        kind = error.failure_class
        if kind is FailureClass.BAD_RECIPIENT:
            return Decision(Action.FAIL, suppress=True)
        if kind is FailureClass.PERMANENT:
            return Decision(Action.FAIL)
        if attempt_no >= self.max_attempts:
            return Decision(Action.DEAD_LETTER)
        delay = self.backoff_s(attempt_no, rng)
        retry_after = getattr(error, "retry_after_s", None)
        if retry_after is not None:
            delay = min(max(float(retry_after), 0.0), self.max_retry_after_s)
        return Decision(Action.RETRY, delay)
