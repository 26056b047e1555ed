"""A scriptable in-process driver for tests: records what it was given and fails on command."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import ClassVar, Self

from drivers.base import BaseDriver
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.errors import DispatchError, ProviderDownError


class FakeDriver(BaseDriver):
    """Sends succeed unless a failure was scripted: ``fail_next(err, times)``, ``fail_for(address, err)``,
    ``down`` (every send answers it), or ``down_after(n, err)`` (the first ``n`` sends go, then it is down)."""

    provider: ClassVar[str] = "fake"
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.provider = name  # type: ignore[misc]  # several fakes in one chain need distinct names
        self.sent: list[OutboundMessage] = []
        self.calls: list[list[str]] = []  #: message ids of each send_batch call
        self._next: deque[DispatchError] = deque()
        self._per_address: dict[str, DispatchError] = {}
        self.down: ProviderDownError | None = None
        self._down_after: tuple[int, ProviderDownError] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls()

    def fail_next(self, error: DispatchError, times: int = 1) -> None:
        self._next.extend([error] * times)

    def fail_for(self, address: str, error: DispatchError) -> None:
        self._per_address[address] = error

    def down_after(self, sends: int, error: ProviderDownError) -> None:
        self._down_after = (len(self.sent) + sends, error)

    async def send_batch(self, messages):  # type: ignore[no-untyped-def]
        self.calls.append([m.message_id for m in messages])
        return await super().send_batch(messages)

    async def send_one(self, message: OutboundMessage) -> SendResult:
        if self.down is not None:
            raise self.down
        if self._down_after is not None and len(self.sent) >= self._down_after[0]:
            raise self._down_after[1]
        address = message.to.email or message.to.phone or ""
        if address in self._per_address:
            raise self._per_address[address]
        if self._next:
            raise self._next.popleft()
        self.sent.append(message)
        return SendResult(message.message_id, self.name, provider_message_id=f"{self.name}-{len(self.sent)}")
