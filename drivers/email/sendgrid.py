"""SendGrid v3 Mail Send (``POST {base}/v3/mail/send``) through httpx.

One request per message: ``personalizations[0]`` carries the recipient and ``custom_args.message_id``
(flattened into SendGrid's events), custom headers (``List-Unsubscribe``...) go in ``headers``,
``OutboundMessage.tags`` become ``categories``. ``202`` + ``X-Message-Id`` is success.

Settings: ``HERALD_SENDGRID_API_KEY`` (required), ``HERALD_SENDGRID_BASE_URL`` (default
``https://api.sendgrid.com``), ``HERALD_SENDGRID_FROM`` (else ``HERALD_EMAIL_FROM``),
``HERALD_SENDGRID_TIMEOUT_S``. Prices live in the routing table (engine/routing/routing_table.yaml).
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

from drivers.base import Driver, OutboundMessage, SendResult
from drivers.email._mime import RESERVED_HEADERS, default_sender, recipient, with_attachment_links
from engine.channels import Channel
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)
from engine.redaction import redact

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
        """Raises: ConfigurationError naming the variable that is missing."""
        api_key = env.get("HERALD_SENDGRID_API_KEY")
        if not api_key:
            raise ConfigurationError("HERALD_SENDGRID_API_KEY is not set")
        return cls(
            api_key=api_key,
            sender=default_sender(env, "HERALD_SENDGRID_FROM"),
            base_url=(env.get("HERALD_SENDGRID_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            timeout_s=float(env.get("HERALD_SENDGRID_TIMEOUT_S") or 10.0),
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


def _retry_after(headers: httpx.Headers) -> float:
    retry_after = headers.get("retry-after")
    if retry_after and retry_after.strip().isdigit():
        return float(retry_after)
    reset = headers.get("x-ratelimit-reset")
    if reset and reset.strip().isdigit():
        return max(1.0, float(reset) - time.time())
    return DEFAULT_RETRY_AFTER_S


def classify(response: httpx.Response) -> DispatchError:
    """Translate one non-202 answer."""
    status = response.status_code
    errors: list[dict[str, Any]] = []
    try:
        doc = response.json()
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
            errors = [e for e in doc["errors"] if isinstance(e, dict)]
    except ValueError:
        errors = []
    detail = redact("; ".join(str(e.get("message") or "") for e in errors) or response.reason_phrase)[:300]
    fields = [str(e.get("field") or "") for e in errors]
    kw: dict[str, Any] = {
        "provider": "sendgrid",
        "code": fields[0] if fields and fields[0] else str(status),
        "status_code": status,
    }
    if status == 429:
        return ThrottledError(detail, retry_after_s=_retry_after(response.headers), **kw)
    if status in (401, 403):
        return ProviderDownError(detail, **kw)
    if status == 400 and any(_names_recipient(f) for f in fields):
        return BadRecipientError(detail, **kw)
    if status >= 500:
        return RetryableError(detail, **kw)
    return PermanentError(detail, **kw)


def _names_recipient(field_name: str) -> bool:
    parts = field_name.lower().split(".")
    return (
        "to" in parts
        or field_name.lower() in ("email", "to")
        or (parts[0] == "personalizations" and parts[-1] == "email")
    )


class SendgridDriver(Driver):
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

    async def _post(self, doc: dict[str, Any]) -> httpx.Response:
        """The one boundary where transport failures become Herald's classes."""
        try:
            return await self._http().post("/v3/mail/send", json=doc)
        except httpx.TimeoutException as err:
            raise RetryableError("SendGrid timeout", provider=self.provider, code="timeout") from err
        except httpx.TransportError as err:
            raise RetryableError(
                f"SendGrid unreachable ({type(err).__name__})", provider=self.provider, code="connect"
            ) from err

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
