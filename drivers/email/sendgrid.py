"""SendGrid v3 Mail Send (``POST {base}/v3/mail/send``) through httpx.

One request per message: ``personalizations[0]`` carries the recipient and ``custom_args.message_id``
(flattened into SendGrid's events), custom headers (``List-Unsubscribe``...) go in ``headers``,
``OutboundMessage.tags`` become ``categories``. ``202`` + ``X-Message-Id`` is success.

Settings: ``HERALD_SENDGRID_API_KEY`` (required), ``HERALD_SENDGRID_BASE_URL`` (default
``https://api.sendgrid.com``), ``HERALD_SENDGRID_FROM`` (else ``HERALD_EMAIL_FROM``),
``HERALD_SENDGRID_TIMEOUT_S``. Prices live in the routing table (engine/routing/routing_table.yaml).

Health check: ``GET /v3/scopes`` (the API key's permissions, sends nothing): the key must hold
``mail.send``.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, ClassVar, Self

import httpx

from drivers.base import BaseDriver
from drivers.email._mime import RESERVED_HEADERS, default_sender, recipient, with_attachment_links
from drivers.http import HTTPX_ERRORS, json_body
from drivers.toolkit import SettingsReader, classified, retry_after_s
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.errors import BadRecipientError, DispatchError, PermanentError, ProviderDownError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.sendgrid.com"
#: When a 429 carries neither Retry-After nor X-RateLimit-Reset.
DEFAULT_RETRY_AFTER_S = 1.0
MAX_CATEGORIES = 10


@dataclass(frozen=True, slots=True)
class SendgridSettings:
    api_key: str = field(repr=False)
    sender: str
    base_url: str = DEFAULT_BASE_URL
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SendgridSettings:
        """Raises: ConfigurationError naming the variable that is missing or malformed."""
        read = SettingsReader(env)
        return cls(
            api_key=read.required("HERALD_SENDGRID_API_KEY"),
            sender=default_sender(env, "HERALD_SENDGRID_FROM"),
            base_url=read.url("HERALD_SENDGRID_BASE_URL", DEFAULT_BASE_URL),
            timeout_s=read.number("HERALD_SENDGRID_TIMEOUT_S", 10.0),
        )


def _person(address: str) -> dict[str, str]:
    name, email = parseaddr(address)
    return {"email": email, "name": name} if name else {"email": email}


def payload(message: OutboundMessage, sender: str) -> dict[str, Any]:
    """The Mail Send JSON for one message."""
    content = with_attachment_links(message.content, message.attachments)
    blocks = [{"type": t, "value": v} for t, v in (("text/plain", content.text), ("text/html", content.html)) if v]
    if not blocks:
        raise PermanentError("email has neither text nor html", provider="sendgrid", code="empty_body")
    to = {"email": recipient(message, "sendgrid")} | ({"name": message.to.name} if message.to.name else {})
    doc: dict[str, Any] = {
        "personalizations": [{"to": [to], "custom_args": {"message_id": message.message_id, "tenant": message.tenant}}],
        "from": _person(sender),
        "subject": content.subject or "",
        "content": blocks,
    }
    headers = {k: v for k, v in message.headers.items() if k.lower() not in RESERVED_HEADERS}
    if headers:
        doc["headers"] = headers
    categories = list(dict.fromkeys(t[:255] for t in message.tags if t))[:MAX_CATEGORIES]
    if categories:
        doc["categories"] = categories
    attachments = [
        {
            "content": base64.b64encode(a.data).decode(),
            "filename": a.filename,
            "type": a.content_type,
            "disposition": "attachment",
        }
        for a in message.attachments
        if a.data is not None
    ]
    if attachments:
        doc["attachments"] = attachments
    return doc


def _rate_limit_reset_s(headers: httpx.Headers) -> float | None:
    """SendGrid's own hint when there is no Retry-After: ``X-RateLimit-Reset``, a unix time."""
    reset = (headers.get("x-ratelimit-reset") or "").strip()
    return max(1.0, float(reset) - time.time()) if reset.isdigit() else None


def classify(response: httpx.Response) -> DispatchError:
    """Translate one non-202 answer."""
    status = response.status_code
    listed = json_body(response).get("errors")
    errors = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    fields = [str(e.get("field") or "") for e in errors]
    recipient_field = status == 400 and any(_names_recipient(f) for f in fields)
    after = retry_after_s(response.headers)
    return classified(
        BadRecipientError if recipient_field else None,
        provider="sendgrid",
        status=status,
        detail="; ".join(str(e.get("message") or "") for e in errors) or response.reason_phrase,
        code=fields[0] if fields and fields[0] else None,
        retry_after_s=after if after is not None else _rate_limit_reset_s(response.headers),
        throttle_after_s=DEFAULT_RETRY_AFTER_S,
    )


def _names_recipient(field_name: str) -> bool:
    parts = field_name.lower().split(".")
    return (
        "to" in parts
        or field_name.lower() in ("email", "to")
        or (parts[0] == "personalizations" and parts[-1] == "email")
    )


class SendgridDriver(BaseDriver):
    """Email through SendGrid. One pooled httpx client per driver, opened on first use."""

    provider: ClassVar[str] = "sendgrid"
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, settings: SendgridSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(SendgridSettings.from_env(env))

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.settings.base_url,
                timeout=self.settings.timeout_s,
                headers={"Authorization": f"Bearer {self.settings.api_key}", "Accept": "application/json"},
            )
        return self._client

    async def send_one(self, message: OutboundMessage) -> SendResult:
        doc = payload(message, message.sender or self.settings.sender)
        response = await self._post(doc)
        if response.status_code != 202:
            raise classify(response)
        log.debug("sendgrid email %s accepted", message.message_id)
        return SendResult(
            message.message_id,
            self.provider,
            provider_message_id=response.headers.get("x-message-id"),
        )

    async def check_health(self) -> None:
        """Raises: DispatchError (ProviderDownError when the key is refused or cannot send mail)."""
        with HTTPX_ERRORS.boundary(self.provider):
            response = await self._http().get("/v3/scopes")
        if response.status_code != 200:
            raise classify(response)
        scopes = json_body(response).get("scopes")
        if not isinstance(scopes, list) or "mail.send" not in scopes:
            raise ProviderDownError("the API key lacks the mail.send scope", provider=self.provider, code="scopes")

    async def _post(self, doc: dict[str, Any]) -> httpx.Response:
        """The one boundary where transport failures become Herald's classes."""
        with HTTPX_ERRORS.boundary(self.provider):
            return await self._http().post("/v3/mail/send", json=doc)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
