"""A scriptable in-process driver for tests: records what it was given and fails on command."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import ClassVar, Self

from drivers.base import Driver, OutboundMessage, SendResult
from engine.channels import Channel
from engine.errors import DispatchError, ProviderDownError


class FakeDriver(Driver):
    """Sends succeed unless a failure was scripted: ``fail_next(err, times)`` or ``fail_for(address, err)``."""

    provider: ClassVar[str] = "fake"
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.provider = name  # type: ignore[misc]  # several fakes in one chain need distinct names
        self.sent: list[OutboundMessage] = []
        self._next: deque[DispatchError] = deque()
        self._per_address: dict[str, DispatchError] = {}
        self.down: ProviderDownError | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls()

    def fail_next(self, error: DispatchError, times: int = 1) -> None:
        self._next.extend([error] * times)

    def fail_for(self, address: str, error: DispatchError) -> None:
        self._per_address[address] = error

    async def send_batch(self, messages):  # type: ignore[no-untyped-def]
        if self.down is not None:
            raise self.down
        return await super().send_batch(messages)

    async def send_one(self, message: OutboundMessage) -> SendResult:
        address = message.to.email or message.to.phone or ""
        if address in self._per_address:
            raise self._per_address[address]
        if self._next:
            raise self._next.popleft()
        self.sent.append(message)
        return SendResult(message.message_id, self.name, provider_message_id=f"{self.name}-{len(self.sent)}")
