"""What a failed send at one provider leads to, by failure class and the message's policy.

- ProviderDown (and an open breaker, which never gets a send): the next provider, at once.
- Retryable / Throttled: the next provider at once when the policy says ``failover: immediate``
  (auth and transactional categories, high priority); otherwise the message waits with backoff.
- A timeout after the request was sent (the outcome is unknown): a retry on the same provider later,
  never a failover at once, so an idempotent provider can tell it is the same message.
- Permanent and BadRecipient: the message fails; no other provider is tried.
"""

from __future__ import annotations

from enum import StrEnum

from engine.errors import DispatchError, FailureClass


class Move(StrEnum):
    FAILOVER = "failover"  #: try the next candidate now; this provider's try is free
    RETRY_SAME = "retry_same"  #: retry later on the same provider (outcome unknown)
    WAIT = "wait"  #: retry later with backoff (the route is chosen again then)
    FAIL = "fail"  #: the message cannot go


def outcome_unknown(error: DispatchError) -> bool:
    """Sent, maybe: the request went out and its answer was lost (``RetryableError.sent_maybe``; a
    driver's ``timeout`` code says the same)."""
    if error.failure_class is not FailureClass.RETRYABLE:
        return False
    return bool(getattr(error, "sent_maybe", False)) or error.code in ("timeout", "read_timeout")


def next_move(error: DispatchError, *, immediate_failover: bool) -> Move:
    kind = error.failure_class
    if kind in (FailureClass.PERMANENT, FailureClass.BAD_RECIPIENT):
        return Move.FAIL
    if kind is FailureClass.PROVIDER_DOWN:
        return Move.FAILOVER
    if outcome_unknown(error):
        return Move.RETRY_SAME
    return Move.FAILOVER if immediate_failover else Move.WAIT
