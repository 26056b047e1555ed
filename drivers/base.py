"""The driver contract: one provider, one small async interface.

A driver turns rendered :class:`OutboundMessage` objects into the provider's wire request and classifies
the answer. It knows nothing of tenants, queues or storage. ``send_batch`` returns one
:class:`SendResult` per message, in order; a failure that concerns one message is a result carrying a
:class:`~engine.errors.DispatchError`, and only a provider-wide failure
(:class:`~engine.errors.ProviderDownError`) is raised, for the whole call.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self

from engine.channels import Channel
from engine.errors import DispatchError, ProviderDownError, RetryableError


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
    ttl_seconds: int | None = None
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


class Driver(ABC):
    """Base class for every provider driver.

    Subclasses set ``provider`` and ``channel`` and implement :meth:`send_one` (or override
    :meth:`send_batch` when the provider has a real batch API).
    """

    provider: ClassVar[str]
    channel: ClassVar[Channel]
    #: How many sends of one batch run concurrently.
    concurrency: ClassVar[int] = 32

    @classmethod
    @abstractmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Build the driver from environment-style settings.

        Raises:
            ConfigurationError: a required setting is missing; the message names the variable.
        """

    @abstractmethod
    async def send_one(self, message: OutboundMessage) -> SendResult:
        """Send one message.

        Raises:
            DispatchError: classified failure of this message (turned into a result by ``send_batch``).
            ProviderDownError: the provider cannot take anything now; aborts the whole batch.
        """

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One result per message, in order.

        Raises:
            ProviderDownError: provider-wide failure; nothing in the batch is known to have been sent
                after it was seen.
        """
        gate = asyncio.Semaphore(self.concurrency)

        async def guarded(message: OutboundMessage) -> SendResult:
            async with gate:
                try:
                    return await self.send_one(message)
                except ProviderDownError:
                    raise
                except DispatchError as err:
                    return SendResult(message.message_id, self.provider, error=err)
                except (TimeoutError, OSError) as err:
                    retry = RetryableError(f"{type(err).__name__}", provider=self.provider)
                    return SendResult(message.message_id, self.provider, error=retry)

        return list(await asyncio.gather(*(guarded(m) for m in messages)))

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections and pools."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
