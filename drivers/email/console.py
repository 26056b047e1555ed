"""Console email: writes what it would send to the console JSONL file (development default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

from drivers.base import BaseDriver
from drivers.console_sink import ConsoleSink
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult


def console_path(env: Mapping[str, str]) -> Path:
    data_dir = Path(env.get("HERALD_DATA_DIR") or Path.home() / ".herald").expanduser()
    return data_dir / "console.jsonl"


class ConsoleDriver(BaseDriver):
    """Shared behaviour of the console drivers: one JSONL record per message, written once."""

    provider: ClassVar[str] = "console"

    def __init__(self, path: Path) -> None:
        self.sink = ConsoleSink(path)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(console_path(env))

    def record(self, message: OutboundMessage) -> dict[str, Any]:
        raise NotImplementedError

    async def send_one(self, message: OutboundMessage) -> SendResult:
        return (await self.send_batch([message]))[0]

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.sink.write([self.record(m) for m in messages])
        return [
            SendResult(m.message_id, self.provider, provider_message_id=f"console-{m.message_id}", cost_usd=0.0)
            for m in messages
        ]


class ConsoleEmailDriver(ConsoleDriver):
    channel: ClassVar[Channel] = Channel.EMAIL

    def record(self, message: OutboundMessage) -> dict[str, Any]:
        return {
            "message_id": message.message_id,
            "channel": self.channel.value,
            "tenant": message.tenant,
            "to": message.to.email,
            "from": message.sender,
            "subject": message.content.subject,
            "text": message.content.text,
            "html": message.content.html,
            "headers": dict(message.headers),
            "template_id": message.template_id,
            "locale": message.locale,
        }
