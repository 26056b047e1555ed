"""In-app driver: puts each message in the recipient's inbox through the :class:`~engine.delivery.InboxStore`
port.

The driver knows nothing of the database: it builds :class:`~engine.delivery.InboxItem` rows and hands a
whole batch to ``InboxStore.put`` (one write per batch). Storing is idempotent on ``(tenant, message_id)``,
so a redelivered batch does not show a message twice. The store is one of Herald's own services: the
composition root hands it in (:class:`~drivers.base.DriverServices`), no setting names it.
:class:`MemoryInboxStore` is the in-process store for tests and development.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Self

from drivers.base import BaseDriver, DriverServices
from drivers.toolkit import OS_ERRORS
from engine.channels import Channel
from engine.delivery import InboxItem, InboxStore, OutboundMessage, SendResult
from engine.errors import ConfigurationError, DispatchError, PermanentError

log = logging.getLogger(__name__)


class MemoryInboxStore:
    """A process-local inbox (tests, development). Not shared between processes."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], list[InboxItem]] = {}
        self._ids: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()

    async def put(self, items: Sequence[InboxItem]) -> None:
        async with self._lock:
            for item in items:
                key = (item.tenant, item.message_id)
                if key in self._ids:
                    continue
                self._ids.add(key)
                self._items.setdefault((item.tenant, item.user_id), []).append(item)

    def inbox(self, tenant: str, user_id: str) -> list[InboxItem]:
        """Newest first."""
        return list(reversed(self._items.get((tenant, user_id), [])))


class InappDriver(BaseDriver):
    """Stores in-app messages for ``to.user_id``; a batch is one ``put``."""

    provider: ClassVar[str] = "store"
    channel: ClassVar[Channel] = Channel.INAPP

    def __init__(self, store: InboxStore, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store  #: belongs to whoever handed it in, who also closes it
        self._clock = clock

    @classmethod
    def create(cls, env: Mapping[str, str], services: DriverServices) -> Self:
        """Raises: ConfigurationError when the composition root handed in no inbox store."""
        if services.inbox is None:
            raise ConfigurationError("the in-app store needs Herald's inbox storage, handed in by the runtime")
        return cls(services.inbox)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Raises: ConfigurationError, always: the store is a service handed in (:meth:`create`), not a setting."""
        return cls.create(env, DriverServices())

    def item(self, message: OutboundMessage) -> InboxItem:
        """The inbox row of one message.

        Raises:
            PermanentError: no ``to.user_id`` or nothing to show.
        """
        if not message.to.user_id:
            raise PermanentError("in-app message without to.user_id", provider=self.provider, code="missing_user_id")
        body = message.content.text or ""
        if not body.strip() and not message.content.title:
            raise PermanentError("empty in-app message", provider=self.provider, code="empty_body")
        now = self._clock()
        return InboxItem(
            tenant=message.tenant,
            user_id=message.to.user_id,
            message_id=message.message_id,
            body=body,
            title=message.content.title,
            data=dict(message.content.data),
            category=message.category,
            template_id=message.template_id,
            locale=message.locale,
            created_at=now,
            # the message's own expiry: the whole seconds of ttl_seconds ended it up to a second early
            expires_at=message.expires_at
            or (now + timedelta(seconds=message.ttl_seconds) if message.ttl_seconds else None),
        )

    async def send_one(self, message: OutboundMessage) -> SendResult:
        return (await self.send_batch([message]))[0]

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One ``put`` for the whole batch; a store that cannot be reached fails every stored message alike
        (provider-wide when nothing was written, retryable on the same store when the write may have been)."""
        results: dict[str, SendResult] = {}
        items: list[InboxItem] = []
        for message in messages:
            try:
                items.append(self.item(message))
            except PermanentError as err:
                results[message.message_id] = SendResult(message.message_id, self.provider, error=err)
        if items:
            try:
                with OS_ERRORS.boundary(self.provider):
                    await self.store.put(items)
            except DispatchError as err:
                results.update({i.message_id: SendResult(i.message_id, self.provider, error=err) for i in items})
                return [results[m.message_id] for m in messages]
        log.debug("inapp: stored %d of %d message(s)", len(items), len(messages))
        return [
            results.get(m.message_id)
            or SendResult(m.message_id, self.provider, provider_message_id=m.message_id, cost_usd=0.0)
            for m in messages
        ]
