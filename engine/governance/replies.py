"""Recipients' replies on SMS and WhatsApp (STOP / START / HELP), from verified provider webhooks.

A reply names no tenant. One that came in on a tenant's own provider account (``?tenant=`` on the
webhook URL, verified with that tenant's credentials) acts for that tenant only; one on the platform's
numbers acts for every tenant that sent to the number in the last ``window_days`` (the number asked
whoever texts it from that sender to stop), and HELP answers with the help text
(``preferences.help_text``) of the tenant that sent to it last.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic_core import PydanticCustomError

from engine.feedback.events import InboundMessage
from engine.models import Tenant, valid_phone
from engine.redaction import redact
from engine.storage.recipients_store import RecipientStore

from .recipients import Keyword, RecipientService, inbound_keyword

log = logging.getLogger(__name__)

TenantLookup = Callable[[str], Awaitable[Tenant | None]]


@dataclass(frozen=True, slots=True)
class RepliesReport:
    stopped: int = 0  #: (tenant, number) pairs newly suppressed
    started: int = 0  #: (tenant, number) pairs lifted
    help: str | None = None  #: the answer to send back (a HELP reply)


class InboundReplies:
    def __init__(
        self, service: RecipientService, store: RecipientStore, tenants: TenantLookup, *, window_days: int = 30
    ) -> None:
        self.service = service
        self.store = store
        self.tenants = tenants
        self.window_days = window_days

    async def handle(self, messages: Sequence[InboundMessage], *, tenant: str | None = None) -> RepliesReport:
        """Act on each reply that is a keyword (others are left alone). ``tenant``: the slug whose own
        credentials verified the request."""
        stopped = started = 0
        help_text = None
        for msg in messages:
            if inbound_keyword(msg.text) is None:
                continue
            try:
                number = valid_phone(msg.sender)
            except PydanticCustomError:
                log.info("a %s reply from %s is not from a number", msg.channel.value, redact(msg.sender))
                continue
            slugs = [tenant] if tenant else await self.store.tenants_sending_to(number, days=self.window_days)
            for slug in slugs:
                found = await self.tenants(slug)
                if found is None:
                    continue
                outcome = await self.service.inbound(
                    found, msg.channel, number, msg.text, help_text=found.config.preferences.help_text
                )
                stopped += outcome.changed and outcome.keyword is Keyword.STOP
                started += outcome.changed and outcome.keyword is Keyword.START
                if outcome.keyword is Keyword.HELP and help_text is None:
                    help_text = outcome.reply
        return RepliesReport(stopped, started, help_text)
