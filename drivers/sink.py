"""The ``sink`` provider, on every channel: accepts every message, counts it and discards it.

For benchmarks and load tests, where the provider must cost nothing and never be the bottleneck. It is
never a default: a channel uses it only when ``HERALD_<CHANNEL>_PROVIDERS`` names it. Nothing is
written or logged per message; :attr:`SinkDriver.accepted` counts what this driver took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Self

from drivers.base import BaseDriver
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult


class SinkDriver(BaseDriver):
    """Accepts and discards; one subclass per channel (the registry maps each channel to its own)."""

    provider: ClassVar[str] = "sink"

    def __init__(self) -> None:
        self.accepted = 0  #: messages taken since the driver was built

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls()

    async def send_one(self, message: OutboundMessage) -> SendResult:
        return (await self.send_batch([message]))[0]

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.accepted += len(messages)
        return [
            SendResult(m.message_id, self.provider, provider_message_id=f"sink-{m.message_id}", cost_usd=0.0)
            for m in messages
        ]


class EmailSink(SinkDriver):
    channel: ClassVar[Channel] = Channel.EMAIL


class SmsSink(SinkDriver):
    channel: ClassVar[Channel] = Channel.SMS


class PushSink(SinkDriver):
    channel: ClassVar[Channel] = Channel.PUSH


class WhatsappSink(SinkDriver):
    channel: ClassVar[Channel] = Channel.WHATSAPP


class InappSink(SinkDriver):
    channel: ClassVar[Channel] = Channel.INAPP
