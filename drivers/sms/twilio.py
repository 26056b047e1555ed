"""Twilio Programmable Messaging (SMS) over its HTTP API.

``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`` (form, HTTP Basic), answered ``201`` with
the message resource (``sid``, ``num_segments``). :class:`TwilioMessages` is the one place that talks to
the API and translates its failures (:data:`TWILIO_ERRORS` + :func:`classify`); the WhatsApp driver
reuses it with ``whatsapp:`` addresses.

Every message asks for status callbacks: ``StatusCallback`` is Herald's own webhook under
``HERALD_PUBLIC_URL`` (``/webhooks/sms/twilio``, ``/webhooks/whatsapp/twilio``) with the message's id in
``herald_message_id``, and ``tenant=<slug>`` when the driver sends with a tenant's own account (so the
webhook verifies with that account's auth token); Twilio signs that whole URL.
``HERALD_TWILIO_STATUS_CALLBACK`` replaces it with a fixed URL; without either, no callback is asked for.

Settings (``from_env``): ``HERALD_TWILIO_ACCOUNT_SID``, ``HERALD_TWILIO_AUTH_TOKEN``, ``HERALD_TWILIO_FROM``
(a number, an alphanumeric sender id, or a Messaging Service ``MG…`` sid), optional
``HERALD_TWILIO_BASE_URL`` (an emulator), ``HERALD_TWILIO_STATUS_CALLBACK``, ``HERALD_TWILIO_TIMEOUT_S``;
``HERALD_PUBLIC_URL`` and ``HERALD_WEBHOOK_TENANT`` are Herald's own.

Health check (both drivers): ``GET {base}/2010-04-01/Accounts/{AccountSid}.json``, the account resource,
whose ``status`` must be ``active`` (``suspended`` or ``closed`` accounts send nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self
from urllib.parse import urlencode

import httpx
import stamina

from drivers.base import BaseDriver
from drivers.http import HTTPX_ERRORS, json_body
from drivers.phone import SmsSendResult, scrub_numbers, sms_message
from drivers.toolkit import SettingsReader, classified, retry_after_s
from engine.channels import Channel
from engine.delivery import OutboundMessage
from engine.errors import (
    BadRecipientError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)

log = logging.getLogger(__name__)

TWILIO_BASE_URL = "https://api.twilio.com"

#: Twilio error code -> failure class (https://www.twilio.com/docs/api/errors). Codes not listed fall back
#: to the HTTP status in :func:`classify`.
TWILIO_ERRORS: dict[int, type[DispatchError]] = {
    20003: ProviderDownError,  # authentication failed
    20005: ProviderDownError,  # account not active
    20404: ProviderDownError,  # account (or resource) not found: wrong account sid
    20429: ThrottledError,  # too many requests / concurrency
    21211: BadRecipientError,  # invalid To number
    21212: ProviderDownError,  # invalid From number: every message would fail
    21408: PermanentError,  # sending to this region is not enabled
    21602: PermanentError,  # body required
    21606: ProviderDownError,  # From is not SMS-capable
    21608: PermanentError,  # trial account: To not verified
    21610: BadRecipientError,  # recipient replied STOP
    21612: BadRecipientError,  # To unroutable
    21614: BadRecipientError,  # To not SMS-capable (landline)
    21617: PermanentError,  # body too long
    21659: ProviderDownError,  # From is not a Twilio number
    30001: RetryableError,  # queue overflow
    30002: ProviderDownError,  # account suspended
    63007: ProviderDownError,  # WhatsApp: no channel for this From
    63016: PermanentError,  # WhatsApp: freeform outside the 24 h window (use a template)
    63018: ThrottledError,  # WhatsApp rate limit
}

#: Default throttling pause when Twilio sends no Retry-After.
DEFAULT_RETRY_AFTER_S = 10.0


def classify(status: int, body: Mapping[str, Any] | None, retry_after: float | None) -> DispatchError:
    """Translate one Twilio error answer (legacy ``code``/``message`` or RFC 9457 ``code``/``detail``)."""
    doc = body or {}
    raw_code = doc.get("code")
    code = int(raw_code) if isinstance(raw_code, int | str) and str(raw_code).isdigit() else None
    return classified(
        TWILIO_ERRORS.get(code) if code is not None else None,
        provider="twilio",
        status=status,
        detail=scrub_numbers(str(doc.get("message") or doc.get("detail") or f"HTTP {status}")),
        code=str(code) if code else None,
        retry_after_s=retry_after,
        throttle_after_s=DEFAULT_RETRY_AFTER_S,
    )


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str
    auth_token: str = field(repr=False)
    sender: str | None = None
    base_url: str = TWILIO_BASE_URL
    status_callback: str | None = None
    timeout_s: float = 10.0
    public_url: str | None = None  #: HERALD_PUBLIC_URL: where Twilio reaches Herald's status webhooks
    webhook_tenant: str | None = None  #: the tenant whose own account this is (HERALD_WEBHOOK_TENANT)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, sender_var: str = "HERALD_TWILIO_FROM") -> TwilioSettings:
        """Raises: ConfigurationError naming the missing or malformed variable."""
        read = SettingsReader(env)
        return cls(
            account_sid=read.required("HERALD_TWILIO_ACCOUNT_SID"),
            auth_token=read.required("HERALD_TWILIO_AUTH_TOKEN"),
            sender=read.required(sender_var),
            base_url=read.url("HERALD_TWILIO_BASE_URL", TWILIO_BASE_URL),
            status_callback=read.optional("HERALD_TWILIO_STATUS_CALLBACK"),
            timeout_s=read.number("HERALD_TWILIO_TIMEOUT_S", 10.0),
            public_url=read.url("HERALD_PUBLIC_URL", "") or None,
            webhook_tenant=read.optional("HERALD_WEBHOOK_TENANT"),
        )

    def status_callback_for(self, channel: Channel, message_id: str) -> str | None:
        """The ``StatusCallback`` of one message (see the module docstring), or None."""
        if self.status_callback:
            return self.status_callback
        if not self.public_url:
            return None
        query = {"herald_message_id": message_id}
        if self.webhook_tenant:
            query["tenant"] = self.webhook_tenant
        return f"{self.public_url}/webhooks/{channel.value}/twilio?{urlencode(query)}"


def sender_params(sender: str) -> dict[str, str]:
    """A Messaging Service sid goes in ``MessagingServiceSid``, anything else in ``From``."""
    if sender.startswith("MG") and len(sender) == 34:
        return {"MessagingServiceSid": sender}
    return {"From": sender}


class TwilioMessages:
    """The Messages resource; the single boundary where Twilio failures become Herald's classes."""

    def __init__(self, settings: TwilioSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client or httpx.AsyncClient(
            base_url=settings.base_url,
            auth=httpx.BasicAuth(settings.account_sid, settings.auth_token),
            timeout=settings.timeout_s,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self._path = f"/2010-04-01/Accounts/{settings.account_sid}/Messages.json"

    async def create(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Create one message and return Twilio's resource.

        Raises:
            DispatchError: the classified failure (ProviderDownError when Twilio cannot be reached).
        """
        with HTTPX_ERRORS.boundary("twilio"):
            response = await self._post(dict(params))
        if response.status_code in (200, 201):
            doc: dict[str, Any] = response.json()
            return doc
        raise classify(response.status_code, json_body(response), retry_after_s(response.headers))

    async def check_account(self) -> None:
        """The health check: the account answers and is active.

        Raises:
            DispatchError: the classified failure; ProviderDownError for an account that is not active.
        """
        with HTTPX_ERRORS.boundary("twilio"):
            response = await self._client.get(f"/2010-04-01/Accounts/{self.settings.account_sid}.json")
        if response.status_code != 200:
            raise classify(response.status_code, json_body(response), retry_after_s(response.headers))
        status = json_body(response).get("status")
        if status != "active":
            raise ProviderDownError(f"the Twilio account is {status or 'not active'}", provider="twilio", code="20005")

    async def _post(self, data: dict[str, str]) -> httpx.Response:
        # Only a failed connect is retried here: nothing reached Twilio, so nothing can be sent twice.
        async for attempt in stamina.retry_context(
            on=httpx.ConnectError, attempts=2, wait_initial=0.05, wait_jitter=0.05
        ):
            with attempt:
                return await self._client.post(self._path, data=data)
        raise AssertionError("unreachable")  # pragma: no cover - retry_context re-raises

    async def aclose(self) -> None:
        await self._client.aclose()


class TwilioSmsDriver(BaseDriver):
    """SMS through Twilio. Results carry the encoding, the billed segments and the routing country."""

    provider: ClassVar[str] = "twilio"
    channel: ClassVar[Channel] = Channel.SMS

    def __init__(self, settings: TwilioSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.api = TwilioMessages(settings, client=client)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(TwilioSettings.from_env(env))

    async def send_one(self, message: OutboundMessage) -> SmsSendResult:
        phone, body, parts = sms_message(message, self.provider)
        sender = message.sender or self.settings.sender or ""
        params = {"To": phone.e164, "Body": body, **sender_params(sender)}
        callback = self.settings.status_callback_for(self.channel, message.message_id)
        if callback:
            params["StatusCallback"] = callback
        if message.ttl_seconds:
            params["ValidityPeriod"] = str(max(1, min(message.ttl_seconds, 36000)))
        doc = await self.api.create(params)
        segments = int(doc.get("num_segments") or parts.segments)
        log.debug("twilio sms %s accepted: %s, %d segment(s)", message.message_id, parts.encoding, segments)
        return SmsSendResult(
            message.message_id,
            self.provider,
            provider_message_id=str(doc.get("sid")),
            encoding=parts.encoding,
            segments=segments,
            country=phone.region,
        )

    async def check_health(self) -> None:
        await self.api.check_account()

    async def aclose(self) -> None:
        await self.api.aclose()
