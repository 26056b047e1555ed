"""The sink provider, on every channel: accepts every message, counts it, discards it.

For benchmarks and load tests (what Herald itself costs, without a provider's latency). It is never a
default: list it in ``HERALD_<CHANNEL>_PROVIDERS`` to use it. A push sink takes tokens of any platform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Self

from drivers.base import Driver, OutboundMessage, SendResult
from engine.channels import Channel


class SinkDriver(Driver):
    provider: ClassVar[str] = "sink"
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self) -> None:
        self.accepted = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls()

    async def send_one(self, message: OutboundMessage) -> SendResult:
        self.accepted += 1
        return SendResult(message.message_id, self.provider, provider_message_id=f"sink-{message.message_id}")

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.accepted += len(messages)
        return [SendResult(m.message_id, self.provider, provider_message_id=f"sink-{m.message_id}") for m in messages]


class SinkEmailDriver(SinkDriver):
    channel: ClassVar[Channel] = Channel.EMAIL


class SinkSmsDriver(SinkDriver):
    channel: ClassVar[Channel] = Channel.SMS


class SinkPushDriver(SinkDriver):
    channel: ClassVar[Channel] = Channel.PUSH


class SinkWhatsappDriver(SinkDriver):
    channel: ClassVar[Channel] = Channel.WHATSAPP


class SinkInappDriver(SinkDriver):
    channel: ClassVar[Channel] = Channel.INAPP
