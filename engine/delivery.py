"""The driver port: what the engine hands a provider driver and what it gets back.

engine/ owns this contract (as it owns the storage and broker ports); drivers/ implement it and the
composition root (actors/, serve_app/) picks concrete drivers from drivers' registry and hands them in.
The engine never imports drivers/.

A driver's ``send_batch`` returns one :class:`SendResult` per message, in order, and raises no
:class:`~engine.errors.DispatchError`: every outcome, a provider-wide one included, is a result. When a
provider-wide failure (:class:`~engine.errors.ProviderDownError`) is seen mid-batch, the driver starts no
further send; sends already in flight finish and keep their outcomes, and each message never started
carries a :class:`~engine.errors.NotAttemptedError`. Dispatch fails over exactly the messages whose result
is provider-wide (nothing was sent for them) and keeps every other outcome.

A driver whose provider offers a cheap call that says whether the account can send (an account or
status endpoint) also implements :class:`HealthChecked`; the control actor calls it on a timer,
never per message, so a breaker can open with no traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from engine.channels import Channel
from engine.errors import DispatchError, NotAttemptedError, ProviderDownError


@dataclass(frozen=True, slots=True)
class Address:
    """Where a message goes. Only the field the channel needs is set."""

    email: str | None = None
    phone: str | None = None
    device_token: str | None = None
    push_platform: str | None = None  # "fcm" | "apns"
    user_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes | None = None
    url: str | None = None  # presigned link when the file is above the inline limit


@dataclass(frozen=True, slots=True)
class Content:
    """The rendered parts. ``text`` is the email text part, the SMS/WhatsApp body, the push body or the
    in-app markdown; ``title`` is the push title."""

    subject: str | None = None
    html: str | None = None
    text: str | None = None
    title: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    message_id: str  #: public id (``msg_...``); also the idempotency key towards providers that take one
    tenant: str
    channel: Channel
    to: Address
    content: Content
    template_id: str = ""
    locale: str = ""
    sender: str | None = None  #: from address / sender id / phone number, when the tenant overrides it
    headers: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    tags: tuple[str, ...] = ()
    category: str | None = None
    priority: str = "normal"
    ttl_seconds: int | None = None  #: what is left of the TTL, whole seconds (for providers' own TTLs)
    expires_at: datetime | None = None  #: the message's TTL itself, for what keeps it (the in-app inbox)
    extra: Mapping[str, Any] = field(default_factory=dict)  #: provider-specific options (WhatsApp template...)


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    provider: str
    provider_message_id: str | None = None
    cost_usd: float | None = None
    error: DispatchError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def attempted(self) -> bool:
        """False when the provider never saw this message (the batch stopped before it)."""
        return not isinstance(self.error, NotAttemptedError)

    @property
    def provider_down(self) -> bool:
        """Nothing was sent because the provider as a whole failed: this message may fail over at once."""
        return isinstance(self.error, ProviderDownError)


def not_attempted(message: OutboundMessage, provider: str, cause: ProviderDownError) -> SendResult:
    """The result of a message a batch never started because ``cause`` stopped it."""
    error = NotAttemptedError(
        f"not attempted: {cause.detail or type(cause).__name__}",
        provider=provider,
        code=cause.code,
        status_code=cause.status_code,
    )
    return SendResult(message.message_id, provider, error=error)


@runtime_checkable
class Driver(Protocol):
    """One provider on one channel.

    ``send_batch`` returns one result per message, in order (see the module docstring for a provider-wide
    failure mid-batch), and ``aclose`` releases the driver's connections.
    """

    provider: ClassVar[str]
    channel: ClassVar[Channel]

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class HealthChecked(Protocol):
    """The driver port's optional part: a cheap check of the provider account, sending nothing."""

    provider: ClassVar[str]
    channel: ClassVar[Channel]

    async def check_health(self) -> None:
        """Return when the account can send now.

        Raises:
            DispatchError: classified as a send's failure would be (ProviderDownError for bad credentials,
                a suspended account or an unreachable provider; RetryableError for a 5xx or a timeout).
        """
        ...


def health_checked(driver: Driver) -> HealthChecked | None:
    """The driver as a :class:`HealthChecked`, or None when its provider has no cheap check."""
    return driver if isinstance(driver, HealthChecked) else None


#: Builds the driver of ``(channel, provider)`` from provider settings (``HERALD_*``/``AWS_*``).
#: Raises ConfigurationError naming what is missing. The composition root supplies it.
DriverFactory = Callable[[Channel, str, Mapping[str, str]], Driver]


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One in-app inbox entry: what the inbox API lists for ``(tenant, user_id)``."""

    tenant: str
    user_id: str
    message_id: str
    body: str  #: rendered ``inapp.md`` (markdown)
    title: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)
    category: str | None = None
    template_id: str = ""
    locale: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    expires_at: datetime | None = None  #: from the message TTL; the inbox hides it afterwards


@runtime_checkable
class InboxStore(Protocol):
    """Storage port of the in-app driver; engine's storage implements it and the runtime hands it in."""

    async def put(self, items: Sequence[InboxItem]) -> None:
        """Store the items, ignoring any ``(tenant, message_id)`` already stored.

        Raises:
            OSError, TimeoutError: the store cannot be reached or did not answer in time.
        """
        ...
