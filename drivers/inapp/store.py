"""In-app driver: puts each message in the recipient's inbox through the :class:`InboxStore` port.

The driver knows nothing of the database: it builds :class:`InboxItem` rows and hands a whole batch to
``InboxStore.put`` (one write per batch). Storing is idempotent on ``(tenant, message_id)``, so a
redelivered batch does not show a message twice. :class:`MemoryInboxStore` is the in-process
implementation for tests and development; the Postgres one is wired by the runtime.

Settings: ``HERALD_INAPP_STORE`` = ``memory`` (process-local, for development) or ``module:factory``, a
callable taking the settings mapping and returning an :class:`InboxStore`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Protocol, Self, runtime_checkable

from drivers.base import Driver, OutboundMessage, SendResult
from engine.channels import Channel
from engine.errors import ConfigurationError, PermanentError, ProviderDownError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One inbox entry: what the inbox API lists for ``(tenant, user_id)``."""

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
    """Storage port for in-app messages."""

    async def put(self, items: Sequence[InboxItem]) -> None:
        """Store the items, ignoring any ``(tenant, message_id)`` already stored.

        Raises:
            ProviderDownError: the store cannot take writes now (the driver also translates
                ``OSError``/``TimeoutError`` into it).
        """
        ...


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


#: The shared development store behind ``HERALD_INAPP_STORE=memory``.
_MEMORY_STORE = MemoryInboxStore()


def load_store(env: Mapping[str, str]) -> InboxStore:
    """Raises: ConfigurationError naming HERALD_INAPP_STORE when unset or unloadable."""
    spec = env.get("HERALD_INAPP_STORE")
    if not spec:
        raise ConfigurationError("HERALD_INAPP_STORE is not set (memory, or module:factory)")
    if spec == "memory":
        return _MEMORY_STORE
    module_name, _, attr = spec.partition(":")
    try:
        factory: Callable[[Mapping[str, str]], InboxStore] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigurationError(f"HERALD_INAPP_STORE: cannot load {spec!r} ({err})") from err
    return factory(env)


class InappDriver(Driver):
    """Stores in-app messages for ``to.user_id``; a batch is one ``put``."""

    provider: ClassVar[str] = "store"
    channel: ClassVar[Channel] = Channel.INAPP

    def __init__(self, store: InboxStore, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self._clock = clock

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(load_store(env))

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
            expires_at=now + timedelta(seconds=message.ttl_seconds) if message.ttl_seconds else None,
        )

    async def send_one(self, message: OutboundMessage) -> SendResult:
        return (await self.send_batch([message]))[0]

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        results: list[SendResult | None] = []
        items: list[InboxItem] = []
        for message in messages:
            try:
                items.append(self.item(message))
                results.append(None)
            except PermanentError as err:
                results.append(SendResult(message.message_id, self.provider, error=err))
        if items:
            try:
                await self.store.put(items)
            except (OSError, TimeoutError) as err:
                raise ProviderDownError(f"inbox store: {type(err).__name__}", provider=self.provider) from err
        log.debug("inapp: stored %d of %d message(s)", len(items), len(messages))
        return [
            r
            if r is not None
            else SendResult(m.message_id, self.provider, provider_message_id=m.message_id, cost_usd=0.0)
            for m, r in zip(messages, results, strict=True)
        ]
