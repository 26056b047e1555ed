"""Failure classes.

The tree encodes what the engine does next by type::

    DispatchError
    ├── RetryableError          transient: retry later (10s/60s/5m + jitter), may fail over
    │   └── ThrottledError      the provider said slow down; ``retry_after_s`` wins over backoff
    ├── ProviderDownError       provider-wide (auth, outage, paused account): fail over at once,
    │   │                       trips the breaker; a round where every candidate was down uses one attempt
    │   └── NotAttemptedError   a batch stopped before this message (nothing sent): fails over too
    └── PermanentError          this message cannot go: ``failed``, no failover
        └── BadRecipientError   permanent, and the address goes on the suppression list

    ConfigurationError          outside the tree on purpose: a deployment mistake, not a send outcome
"""

from __future__ import annotations

from enum import StrEnum


class FailureClass(StrEnum):
    RETRYABLE = "retryable"
    THROTTLED = "throttled"
    PROVIDER_DOWN = "provider_down"
    PERMANENT = "permanent"
    BAD_RECIPIENT = "bad_recipient"


class DispatchError(Exception):
    """Root of every classified send failure.

    ``code`` is the provider's own error code (``MessageRejected``, ``21211``, ``UNREGISTERED``) and
    ``detail`` a short, already-redacted excerpt safe to store and log.
    """

    failure_class: FailureClass = FailureClass.RETRYABLE

    def __init__(
        self,
        detail: str = "",
        *,
        provider: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(detail or self.__class__.__name__)
        self.detail = detail
        self.provider = provider
        self.code = code
        self.status_code = status_code

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes survive pickling (results cross process boundaries on Ray).
        return (_rebuild, (self.__class__, self.detail, dict(self.__dict__)))


def _rebuild(cls: type[DispatchError], detail: str, state: dict[str, object]) -> DispatchError:
    err = cls.__new__(cls)
    Exception.__init__(err, detail or cls.__name__)
    err.__dict__.update(state)
    return err


class RetryableError(DispatchError):
    """Try again later. ``sent_maybe`` is true when the request went out and its answer was lost (a read
    timeout, a dropped connection): the provider may have accepted it, so it is retried on the same
    provider, whose idempotency key can recognise it, rather than failed over."""

    failure_class = FailureClass.RETRYABLE

    def __init__(
        self, detail: str = "", *, retry_after_s: float | None = None, sent_maybe: bool = False, **kw: object
    ) -> None:
        super().__init__(detail, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s
        self.sent_maybe = sent_maybe


class ThrottledError(RetryableError):
    failure_class = FailureClass.THROTTLED


class ProviderDownError(DispatchError):
    failure_class = FailureClass.PROVIDER_DOWN


class NotAttemptedError(ProviderDownError):
    """The batch stopped at a provider-wide failure before this message was started: the provider never
    saw it. It keeps the code of the failure that stopped the batch."""


class PermanentError(DispatchError):
    failure_class = FailureClass.PERMANENT


class BadRecipientError(PermanentError):
    failure_class = FailureClass.BAD_RECIPIENT


class ConfigurationError(Exception):
    """A setting is missing or wrong; the message names the variable to set."""


class RenderError(PermanentError):
    """A template could not be rendered for this message (missing variable, sandbox violation)."""
