"""The base class of Herald's drivers: engine's driver port (:mod:`engine.delivery`) with its batch pipeline.

A driver turns rendered :class:`~engine.delivery.OutboundMessage` objects into the provider's wire request
and classifies the answer; it knows nothing of tenants, queues or storage. Concrete drivers implement
:meth:`BaseDriver.send_one` and inherit :meth:`BaseDriver.send_batch`, which keeps the port's promise: one
result per message, and after a provider-wide failure no new send is started (see :mod:`engine.delivery`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self

from drivers.toolkit import OS_ERRORS
from engine.channels import Channel
from engine.delivery import InboxStore, OutboundMessage, SendResult, not_attempted
from engine.errors import DispatchError, ProviderDownError, RetryableError


@dataclass(frozen=True, slots=True)
class DriverServices:
    """Herald's own services that some drivers need, handed in by the composition root (never named by a
    setting). A driver that needs one takes it in :meth:`BaseDriver.create`."""

    inbox: InboxStore | None = None  #: where the in-app driver stores messages


class BaseDriver(ABC):
    """Base class for every provider driver.

    Subclasses set ``provider`` and ``channel``, implement :meth:`from_env` and :meth:`send_one` (or
    override :meth:`send_batch` when the provider has a real batch API, keeping its contract).
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

    @classmethod
    def create(cls, env: Mapping[str, str], services: DriverServices) -> Self:
        """What the registry calls: settings plus the services the composition root hands in. Most drivers
        need only their settings; one that needs a service overrides this.

        Raises:
            ConfigurationError: a setting (or a service) the driver needs is missing.
        """
        return cls.from_env(env)

    @abstractmethod
    async def send_one(self, message: OutboundMessage) -> SendResult:
        """Send one message.

        Raises:
            DispatchError: the classified failure of this message (``send_batch`` makes it a result);
                a ProviderDownError also stops the batch from starting further sends.
        """

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One result per message, in order, never raising a DispatchError.

        Up to :attr:`concurrency` sends run at once. Once one answers provider-wide (ProviderDownError),
        no further send starts: those in flight finish (bounded by the driver's own timeouts) and keep
        their outcomes, and every message not started gets a ``not attempted`` result.
        """
        results: list[SendResult | None] = [None] * len(messages)
        pending = iter(enumerate(messages))
        stopped_by: list[ProviderDownError] = []

        async def worker() -> None:
            for index, message in pending:  # the workers share one iterator: each message starts once
                if stopped_by:
                    results[index] = not_attempted(message, self.provider, stopped_by[0])
                    continue
                result = results[index] = await self._attempt(message)
                if isinstance(result.error, ProviderDownError) and not stopped_by:
                    stopped_by.append(result.error)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(messages)))))
        done = [r for r in results if r is not None]
        assert len(done) == len(messages)
        return done

    async def _attempt(self, message: OutboundMessage) -> SendResult:
        try:
            return await self.send_one(message)
        except DispatchError as err:
            return SendResult(message.message_id, self.provider, error=err)
        except (TimeoutError, OSError) as err:
            # A driver's boundary translates its library's errors; this catches what escaped it, so one
            # stray socket error cannot take the batch's other outcomes down with it.
            error = OS_ERRORS.translate(err, self.provider) or RetryableError(
                f"{type(err).__name__} while sending", provider=self.provider, code="transport", sent_maybe=True
            )
            return SendResult(message.message_id, self.provider, error=error)

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
