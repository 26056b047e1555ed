"""Failure classes.

The tree encodes what the engine does next by type::

    DispatchError
    ├── RetryableError          transient: retry later (10s/60s/5m + jitter), may fail over;
    │   │                       ``outcome_unknown``: timed out after sending, retried on the same provider
    │   └── ThrottledError      the provider said slow down; ``retry_after_s`` wins over backoff
    ├── ProviderDownError       provider-wide (auth, outage, paused account): fail over at once,
    │                           trips the breaker, does not use up the message's attempts
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
    failure_class = FailureClass.RETRYABLE

    def __init__(
        self, detail: str = "", *, retry_after_s: float | None = None, outcome_unknown: bool = False, **kw: object
    ) -> None:
        super().__init__(detail, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s
        #: The request reached the provider and no answer came back (a read timeout): it may have been
        #: sent, so it is retried on the same provider (which may dedupe it) rather than failed over.
        self.outcome_unknown = outcome_unknown


class ThrottledError(RetryableError):
    failure_class = FailureClass.THROTTLED


class ProviderDownError(DispatchError):
    failure_class = FailureClass.PROVIDER_DOWN


class PermanentError(DispatchError):
    failure_class = FailureClass.PERMANENT


class BadRecipientError(PermanentError):
    failure_class = FailureClass.BAD_RECIPIENT


class ConfigurationError(Exception):
    """A setting is missing or wrong; the message names the variable to set."""


class RenderError(PermanentError):
    """A template could not be rendered for this message (missing variable, sandbox violation)."""
