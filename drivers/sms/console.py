"""Console SMS: writes what it would send to the console JSONL file (development default)."""

from __future__ import annotations

from typing import Any, ClassVar

from drivers.email.console import ConsoleDriver
from engine.channels import Channel
from engine.delivery import OutboundMessage


class ConsoleSmsDriver(ConsoleDriver):
    channel: ClassVar[Channel] = Channel.SMS

    def record(self, message: OutboundMessage) -> dict[str, Any]:
        return {
            "message_id": message.message_id,
            "channel": self.channel.value,
            "tenant": message.tenant,
            "to": message.to.phone,
            "from": message.sender,
            "text": message.content.text,
            "template_id": message.template_id,
            "locale": message.locale,
        }
