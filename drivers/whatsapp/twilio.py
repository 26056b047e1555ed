"""WhatsApp through Twilio: the Messages API with ``whatsapp:+E164`` addresses.

A template goes as ``ContentSid`` + ``ContentVariables`` (JSON: body parameters, then button values that
the body does not already carry; a ``whatsapp/authentication`` content takes the code alone); free-form
text as ``Body`` (only inside the 24 h window). Failures are classified by the Twilio table in
:mod:`drivers.sms.twilio`.

Settings: the Twilio ones (see :mod:`drivers.sms.twilio`), with ``HERALD_TWILIO_WHATSAPP_FROM`` (the
WhatsApp sender number, E.164, with or without ``whatsapp:``) instead of ``HERALD_TWILIO_FROM``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import ClassVar, Self

import httpx

from drivers.base import BaseDriver
from drivers.phone import parse_phone, whatsapp_address
from drivers.sms.twilio import TwilioMessages, TwilioSettings
from drivers.whatsapp import WhatsappTemplate
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.errors import PermanentError

log = logging.getLogger(__name__)


def _whatsapp_from(sender: str) -> str:
    return sender if sender.startswith("whatsapp:") else f"whatsapp:{sender}"


class TwilioWhatsappDriver(BaseDriver):
    """WhatsApp via Twilio; a template needs its Twilio Content sid (``content_sid``)."""

    provider: ClassVar[str] = "twilio"
    channel: ClassVar[Channel] = Channel.WHATSAPP

    def __init__(self, settings: TwilioSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.api = TwilioMessages(settings, client=client)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(TwilioSettings.from_env(env, sender_var="HERALD_TWILIO_WHATSAPP_FROM"))

    def build_params(self, message: OutboundMessage, to: str, template: WhatsappTemplate | None) -> dict[str, str]:
        """The form fields of one message.

        Raises:
            PermanentError: a template without a Content sid, or nothing to send.
        """
        params = {"To": to, "From": _whatsapp_from(message.sender or self.settings.sender or "")}
        if template is not None:
            sid = template.content_sid or (template.name if template.name.startswith("HX") else None)
            if sid is None:
                raise PermanentError(
                    "Twilio WhatsApp templates need a content_sid (HX…)",
                    provider=self.provider,
                    code="bad_template",
                )
            params["ContentSid"] = sid
            variables = template.content_variables()
            if variables:
                params["ContentVariables"] = json.dumps(variables, ensure_ascii=False)
            return params
        if not (message.content.text or "").strip():
            raise PermanentError("empty WhatsApp text", provider=self.provider, code="empty_body")
        params["Body"] = message.content.text or ""
        return params

    async def send_one(self, message: OutboundMessage) -> SendResult:
        phone = parse_phone(message.to.phone)
        template = WhatsappTemplate.from_extra(message.extra)
        params = self.build_params(message, whatsapp_address(phone, "twilio"), template)
        callback = self.settings.status_callback_for(self.channel, message.message_id)
        if callback:
            params["StatusCallback"] = callback
        doc = await self.api.create(params)
        log.debug("twilio whatsapp %s accepted (%s)", message.message_id, "template" if template else "text")
        return SendResult(message.message_id, self.provider, provider_message_id=str(doc.get("sid")))

    async def check_health(self) -> None:
        await self.api.check_account()

    async def aclose(self) -> None:
        await self.api.aclose()
