"""WhatsApp through Meta's Cloud API (Graph): ``POST {base}/{version}/{phone-number-id}/messages``.

Each message carries Herald's id as ``biz_opaque_callback_data``, which Meta echoes in its status
webhooks. Templates (name, language, body parameters, buttons such as an authentication template's copy-code
button) are first-class (see :mod:`drivers.whatsapp`); free-form text only reaches a user inside the
24 h service window. Recipients are bare digits (no ``+``). Failures are classified by Graph's
``error.code`` in :data:`META_ERRORS` (HTTP is 400 for most of them). The health check reads the phone
number's node (``GET {base}/{version}/{phone-number-id}``): the token is accepted, the number is this
account's, and Meta's messaging health (``health_status.can_send_message``) is not ``BLOCKED``.

Settings: ``HERALD_META_TOKEN`` (system-user token), ``HERALD_META_PHONE_NUMBER_ID``, optional
``HERALD_META_BASE_URL`` (an emulator), ``HERALD_META_API_VERSION`` (default ``v23.0``),
``HERALD_META_TIMEOUT_S``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import httpx

from drivers.base import BaseDriver
from drivers.http import HTTPX_ERRORS, json_body
from drivers.phone import parse_phone, scrub_numbers, whatsapp_address
from drivers.toolkit import SettingsReader, classified
from drivers.whatsapp import WhatsappTemplate
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.errors import (
    BadRecipientError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)

log = logging.getLogger(__name__)

META_BASE_URL = "https://graph.facebook.com"
#: The phone number's fields the health check reads (``health_status``: Meta's own can-send verdict).
CHECK_FIELDS = "verified_name,quality_rating,health_status"

#: Graph ``error.code`` -> (failure class, default retry-after seconds). Codes 200-299 (permissions) are
#: ProviderDown too; anything else falls back to the HTTP status in :func:`classify`.
META_ERRORS: dict[int, tuple[type[DispatchError], float | None]] = {
    # throttling: back off
    4: (ThrottledError, 60.0),  # application request limit
    80007: (ThrottledError, 60.0),  # WABA rate limit
    130429: (ThrottledError, 1.0),  # throughput per phone number
    131056: (ThrottledError, 6.0),  # pair rate limit: same recipient too fast
    133016: (ThrottledError, 300.0),  # registration attempts
    131048: (PermanentError, None),  # spam rate limit: retrying makes it worse
    # auth and account: every message would fail -> fail over
    0: (ProviderDownError, None),  # auth exception
    3: (ProviderDownError, None),  # capability
    10: (ProviderDownError, None),  # permission denied
    190: (ProviderDownError, None),  # access token expired or invalid
    368: (ProviderDownError, None),  # temporarily blocked for policy violations
    131031: (ProviderDownError, None),  # business account locked
    131042: (ProviderDownError, None),  # payment issue
    131045: (ProviderDownError, None),  # phone number not registered / certificate
    # this recipient
    131026: (BadRecipientError, None),  # undeliverable: not a WhatsApp user
    131050: (BadRecipientError, None),  # user stopped marketing messages (opt-out)
    131021: (PermanentError, None),  # recipient is the sender
    131030: (PermanentError, None),  # recipient not in the test allow-list
    130472: (PermanentError, None),  # user in an experiment group
    131049: (RetryableError, 86400.0),  # Meta chose not to deliver (per-user marketing limit): much later
    # this message
    100: (PermanentError, None),  # invalid parameter
    131008: (PermanentError, None),  # required parameter missing
    131009: (PermanentError, None),  # parameter value invalid
    131047: (PermanentError, None),  # re-engagement: > 24 h since the user's last message, use a template
    131051: (PermanentError, None),  # unsupported message type
    131052: (PermanentError, None),  # media download
    131053: (PermanentError, None),  # media upload
    130497: (PermanentError, None),  # account may not message this country
    132000: (PermanentError, None),  # template parameter count mismatch
    132001: (PermanentError, None),  # template does not exist (in this language)
    132005: (PermanentError, None),  # template hydrated text too long
    132007: (PermanentError, None),  # template format character policy
    132012: (PermanentError, None),  # template parameter format mismatch
    132015: (PermanentError, None),  # template paused
    132016: (PermanentError, None),  # template disabled
    132068: (PermanentError, None),  # flow blocked
    132069: (PermanentError, None),  # flow throttled
    135000: (PermanentError, None),  # generic user error
    # Meta's side: try again
    1: (RetryableError, None),  # unknown API error
    2: (RetryableError, None),  # temporary service error
    131000: (RetryableError, None),  # something went wrong
    131016: (RetryableError, 30.0),  # service unavailable
}


def classify(status: int, body: Mapping[str, Any] | None) -> DispatchError:
    """Translate one Graph error answer ``{"error": {"code", "message", "error_data", ...}}``."""
    error = (body or {}).get("error") or {}
    raw = error.get("code")
    code = raw if isinstance(raw, int) else None
    kind: type[DispatchError] | None = None
    default_after: float | None = None
    if code is not None and code in META_ERRORS:
        kind, default_after = META_ERRORS[code]
    elif code is not None and 200 <= code <= 299:
        kind = ProviderDownError
    return classified(
        kind,
        provider="meta",
        status=status,
        detail=scrub_numbers(str(error.get("message") or f"HTTP {status}")),
        code=str(code) if code is not None else None,
        retry_after_s=default_after,
        throttle_after_s=60.0,
    )


@dataclass(frozen=True, slots=True)
class MetaSettings:
    token: str = field(repr=False)
    phone_number_id: str = ""
    base_url: str = META_BASE_URL
    api_version: str = "v23.0"
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetaSettings:
        """Raises: ConfigurationError naming the missing or malformed variable."""
        read = SettingsReader(env)
        return cls(
            token=read.required("HERALD_META_TOKEN"),
            phone_number_id=read.required("HERALD_META_PHONE_NUMBER_ID"),
            base_url=read.url("HERALD_META_BASE_URL", META_BASE_URL),
            api_version=read.optional("HERALD_META_API_VERSION") or "v23.0",
            timeout_s=read.number("HERALD_META_TIMEOUT_S", 10.0),
        )


def build_payload(to: str, message: OutboundMessage, template: WhatsappTemplate | None) -> dict[str, Any]:
    """The JSON body of one message.

    Raises:
        PermanentError: a free-form message without text.
    """
    payload: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to}
    # Meta echoes this in every status webhook of the message: events name Herald's message directly.
    payload["biz_opaque_callback_data"] = message.message_id
    if template is not None:
        spec: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
        components = template.meta_components()
        if components:
            spec["components"] = components
        payload.update(type="template", template=spec)
        return payload
    text = message.content.text or ""
    if not text.strip():
        raise PermanentError("empty WhatsApp text", provider="meta", code="empty_body")
    preview = bool(message.extra.get("preview_url", False))
    payload.update(type="text", text={"preview_url": preview, "body": text})
    return payload


class MetaWhatsappDriver(BaseDriver):
    """WhatsApp Cloud API driver: one HTTP/2 pool, one call per message."""

    provider: ClassVar[str] = "meta"
    channel: ClassVar[Channel] = Channel.WHATSAPP

    def __init__(self, settings: MetaSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client or httpx.AsyncClient(
            base_url=settings.base_url,
            http2=True,
            headers={"Authorization": f"Bearer {settings.token}"},
            timeout=settings.timeout_s,
        )
        self._number = f"/{settings.api_version}/{settings.phone_number_id}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(MetaSettings.from_env(env))

    async def send_one(self, message: OutboundMessage) -> SendResult:
        phone = parse_phone(message.to.phone)
        template = WhatsappTemplate.from_extra(message.extra)
        payload = build_payload(whatsapp_address(phone, "meta"), message, template)
        doc = await self._post(payload)
        try:
            wamid = str(doc["messages"][0]["id"])
        except (KeyError, IndexError, TypeError) as err:
            raise RetryableError("Meta answered 200 without a message id", provider="meta") from err
        log.debug("meta whatsapp %s accepted (%s)", message.message_id, payload["type"])
        return SendResult(
            message.message_id,
            self.provider,
            provider_message_id=wamid,
        )

    async def check_health(self) -> None:
        """Raises: DispatchError (ProviderDownError when the token is refused or Meta blocks messaging)."""
        doc = await self._call("GET", self._number, params={"fields": CHECK_FIELDS})
        health = doc.get("health_status")
        health = health if isinstance(health, dict) else {}
        if health.get("can_send_message") != "BLOCKED":
            return  # AVAILABLE, or LIMITED (it sends, with limits)
        entities = [e for e in health.get("entities") or [] if isinstance(e, dict)]
        blocked = [e for e in entities if e.get("can_send_message") == "BLOCKED"]
        codes = [str(x.get("error_code")) for e in blocked for x in e.get("errors") or [] if isinstance(x, dict)]
        where = ", ".join(str(e.get("entity_type", "?")) for e in blocked) or "account"
        raise ProviderDownError(
            f"Meta blocks messaging ({where}{': ' + ', '.join(codes) if codes else ''})",
            provider=self.provider,
            code=codes[0] if codes else "blocked",
        )

    async def _post(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", f"{self._number}/messages", json=payload)

    async def _call(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        """The one boundary where Graph failures become Herald's classes."""
        with HTTPX_ERRORS.boundary(self.provider):
            response = await self._client.request(method, path, **request)
        body = json_body(response)
        if response.status_code == 200:
            return body
        raise classify(response.status_code, body)

    async def aclose(self) -> None:
        await self._client.aclose()
