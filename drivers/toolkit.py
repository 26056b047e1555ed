"""What every driver shares instead of writing it again.

- :class:`SettingsReader`: provider settings from an environment-style mapping, every error naming the
  variable to set.
- :func:`classified`: one provider answer as a failure class. A driver looks the provider's own code up
  in its table (data, per provider) and leaves the rest to the one HTTP status ladder,
  :func:`kind_for_status`.
- :func:`retry_after_s`: the ``Retry-After`` header, in delta-seconds or HTTP-date form.
- :class:`TransportErrors`: one answer for a network failure, whatever the client library. Before
  anything was sent (refused connection, DNS failure, connect timeout) the provider is down for this
  caller: :class:`~engine.errors.ProviderDownError`, fail over at once. After the request went out (read
  timeout, dropped connection) the outcome is unknown: :class:`~engine.errors.RetryableError` with
  ``sent_maybe=True``, retried on the same provider. Each library declares which of its exceptions are
  which (:data:`OS_ERRORS` here, ``HTTPX_ERRORS`` in :mod:`drivers.http`, ``BOTO_ERRORS`` in
  :mod:`drivers.aws_client`, ``SMTP_ERRORS`` in :mod:`drivers.email.smtp`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from engine.errors import (
    ConfigurationError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)
from engine.redaction import redact

#: Longest provider text kept on an error (it is stored with the attempt and logged).
MAX_DETAIL = 300
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsReader:
    """Reads one driver's settings; a missing or malformed value is a ConfigurationError naming it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional(self, *names: str) -> str | None:
        """The first of ``names`` that is set (non-empty), else None."""
        return next((self.env[n] for n in names if self.env.get(n)), None)

    def required(self, *names: str) -> str:
        """The first of ``names`` that is set.

        Raises:
            ConfigurationError: none is set.
        """
        value = self.optional(*names)
        if value is None:
            others = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
            raise ConfigurationError(f"{names[0]}{others} is not set")
        return value

    def number(self, name: str, default: float) -> float:
        """Raises: ConfigurationError when the value is not a number."""
        raw = self.optional(name)
        try:
            return float(raw) if raw is not None else default
        except ValueError:
            raise ConfigurationError(f"{name} must be a number") from None

    def integer(self, name: str, default: int) -> int:
        """Raises: ConfigurationError when the value is not a whole number."""
        raw = self.optional(name)
        try:
            return int(raw) if raw is not None else default
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number") from None

    def flag(self, name: str) -> bool | None:
        """``true``/``false`` (and 1/0, yes/no, on/off); None when unset.

        Raises:
            ConfigurationError: any other value.
        """
        raw = (self.optional(name) or "").strip().lower()
        if not raw:
            return None
        if raw in _TRUE or raw in _FALSE:
            return raw in _TRUE
        raise ConfigurationError(f"{name} must be true or false")

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        """Raises: ConfigurationError when the value is not one of ``choices``."""
        value = self.optional(name) or default
        if value not in choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(choices)}")
        return value

    def url(self, name: str, default: str) -> str:
        """A base URL without its trailing slash."""
        return (self.optional(name) or default).rstrip("/")


def kind_for_status(status: int | None) -> type[DispatchError]:
    """The HTTP status ladder, for answers the provider's own error table does not name: 401/403 mean our
    credentials or account (provider-wide), 429 slow down, 5xx try again, any other status this message."""
    if status in (401, 403):
        return ProviderDownError
    if status == 429:
        return ThrottledError
    if status is not None and status >= 500:
        return RetryableError
    return PermanentError


def classified(
    kind: type[DispatchError] | None,
    *,
    provider: str,
    status: int | None,
    detail: str,
    code: str | None = None,
    retry_after_s: float | None = None,
    throttle_after_s: float | None = None,
) -> DispatchError:
    """One classified failure.

    ``kind`` is what the provider's table says (None: the status ladder decides); ``code`` the provider's
    own code (default: the status); ``detail`` the provider's text, redacted and shortened here;
    ``retry_after_s`` the wait the answer asked for (or the table's), and ``throttle_after_s`` the pause
    when a throttled answer names none.
    """
    kind = kind or kind_for_status(status)
    text = redact(detail)[:MAX_DETAIL]
    common: dict[str, object] = {"provider": provider, "code": code or str(status), "status_code": status}
    if issubclass(kind, RetryableError):
        after = retry_after_s
        if after is None and issubclass(kind, ThrottledError):
            after = throttle_after_s
        return kind(text, retry_after_s=after, **common)
    return kind(text, **common)  # type: ignore[arg-type]


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110, 10.2.3); None when
    absent or unreadable. Header names are looked up in lower case (``httpx.Headers`` ignores case)."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


Errors = tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class TransportErrors:
    """Which of a client library's exceptions mean what, by when the network failed."""

    #: Refused connection, DNS failure, connect timeout, TLS refused: nothing was sent.
    unreachable: Errors
    #: The request went out and no answer came in time.
    timed_out: Errors
    #: The connection broke after the request went out.
    broken: Errors = ()

    @property
    def all(self) -> Errors:
        return self.unreachable + self.timed_out + self.broken

    def translate(self, err: BaseException, provider: str) -> DispatchError | None:
        """Herald's class for ``err``; None when it is not one of this library's transport errors."""
        name = type(err).__name__
        if isinstance(err, self.unreachable):
            return ProviderDownError(f"{provider} unreachable ({name})", provider=provider, code="connect")
        if isinstance(err, self.timed_out):
            return RetryableError(
                f"no answer from {provider} in time ({name}); it may have been sent",
                provider=provider,
                code="timeout",
                sent_maybe=True,
            )
        if isinstance(err, self.broken):
            return RetryableError(
                f"connection to {provider} lost ({name}); it may have been sent",
                provider=provider,
                code="transport",
                sent_maybe=True,
            )
        return None

    @contextmanager
    def boundary(self, provider: str) -> Iterator[None]:
        """Around one provider call: its transport errors leave as Herald's classes (``from`` the original)."""
        try:
            yield
        except self.all as err:
            translated = self.translate(err, provider)
            assert translated is not None
            raise translated from err


#: The operating system's own (sockets, and what asyncio and database clients pass on).
OS_ERRORS = TransportErrors(
    unreachable=(ConnectionRefusedError, socket.gaierror),
    timed_out=(TimeoutError,),
    broken=(ConnectionResetError, ConnectionAbortedError, BrokenPipeError),
)
