"""APNs provider API over HTTP/2 with token (JWT) auth: ``POST {base}/3/device/{token}``.

One long-lived HTTP/2 connection pool (httpx + h2). The provider token is an ES256 JWT (``kid`` = key
id, ``iss`` = team id, ``iat``) signed with the ``.p8`` key and reused for :data:`TOKEN_REFRESH_S` (APNs
wants 20-60 min: older is ``403 ExpiredProviderToken``, more often is ``429 TooManyProviderTokenUpdates``);
an ``ExpiredProviderToken`` answer regenerates it once and retries. Failures are classified by
``reason`` in :data:`APNS_ERRORS`; ``410 Unregistered`` keeps APNs' ``timestamp`` on the error as
``invalid_since_ms`` (drop the token only if it was registered before that). There is no health check:
APNs has no request that checks the key or the topic without sending a notification.

Settings: ``HERALD_APNS_KEY_FILE`` (.p8), ``HERALD_APNS_KEY_ID``, ``HERALD_APNS_TEAM_ID``,
``HERALD_APNS_TOPIC`` (bundle id), optional ``HERALD_APNS_BASE_URL`` (default production; an emulator),
``HERALD_APNS_SANDBOX=1`` (development host), ``HERALD_APNS_CA_FILE`` (extra CA to trust: the emulator's),
``HERALD_APNS_TIMEOUT_S``.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from drivers.base import BaseDriver
from drivers.http import HTTPX_ERRORS, json_body
from drivers.push import PushOptions, deep_merge, device_token, install_device_token_filter, mask_token
from drivers.toolkit import SettingsReader, classified, retry_after_s
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)

log = logging.getLogger(__name__)

APNS_PRODUCTION_URL = "https://api.push.apple.com"
APNS_SANDBOX_URL = "https://api.sandbox.push.apple.com"
#: Provider-token lifetime before a new one is signed (APNs: between 20 and 60 minutes).
TOKEN_REFRESH_S = 30 * 60
#: Payload limits in bytes.
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
#: Topic suffix per push type (token auth sends the bundle id plus this).
TOPIC_SUFFIX = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
}

#: APNs ``reason`` -> (failure class, default retry-after seconds).
APNS_ERRORS: dict[str, tuple[type[DispatchError], float | None]] = {
    "BadDeviceToken": (BadRecipientError, None),
    "DeviceTokenNotForTopic": (BadRecipientError, None),
    "Unregistered": (BadRecipientError, None),
    "ExpiredToken": (BadRecipientError, None),
    "MissingDeviceToken": (BadRecipientError, None),
    "BadCollapseId": (PermanentError, None),
    "BadExpirationDate": (PermanentError, None),
    "BadMessageId": (PermanentError, None),
    "BadPriority": (PermanentError, None),
    "DuplicateHeaders": (PermanentError, None),
    "InvalidPushType": (PermanentError, None),
    "PayloadEmpty": (PermanentError, None),
    "PayloadTooLarge": (PermanentError, None),
    "BadPath": (PermanentError, None),
    "MethodNotAllowed": (PermanentError, None),
    "BadTopic": (ProviderDownError, None),  # our topic setting is wrong: every message would fail
    "MissingTopic": (ProviderDownError, None),
    "TopicDisallowed": (ProviderDownError, None),
    "BadCertificate": (ProviderDownError, None),
    "BadCertificateEnvironment": (ProviderDownError, None),
    "Forbidden": (ProviderDownError, None),
    "InvalidProviderToken": (ProviderDownError, None),
    "MissingProviderToken": (ProviderDownError, None),
    "ExpiredProviderToken": (ProviderDownError, None),  # only after a fresh token was refused too
    "TooManyRequests": (ThrottledError, 60.0),  # this device token, too often
    "TooManyProviderTokenUpdates": (ThrottledError, 60.0),
    "IdleTimeout": (RetryableError, None),
    "InternalServerError": (RetryableError, None),
    "ServiceUnavailable": (RetryableError, 30.0),
    "Shutdown": (RetryableError, None),
}


def classify(status: int, body: Mapping[str, Any] | None, retry_after: float | None) -> DispatchError:
    """Translate one APNs error answer ``{"reason": …, "timestamp": …}``."""
    doc = body or {}
    reason = str(doc.get("reason") or "")
    kind, default_after = APNS_ERRORS.get(reason, (None, None))
    if kind is None and status == 410:
        kind = BadRecipientError  # the device token is no longer valid for the topic
    detail = reason or f"HTTP {status}"
    stamp = doc.get("timestamp")
    if isinstance(stamp, int | float):
        detail += f" (token invalid since {datetime.fromtimestamp(stamp / 1000, UTC).isoformat()})"
    err = classified(
        kind,
        provider="apns",
        status=status,
        detail=detail,
        code=reason or None,
        retry_after_s=retry_after if retry_after is not None else default_after,
        throttle_after_s=60.0,
    )
    if isinstance(stamp, int | float):
        err.invalid_since_ms = int(stamp)  # type: ignore[attr-defined]
    return err


class ProviderToken:
    """The ES256 provider token, signed once per :data:`TOKEN_REFRESH_S` (or when APNs says it expired)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        *,
        clock: Callable[[], float] = time.time,
        refresh_s: float = TOKEN_REFRESH_S,
    ) -> None:
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._clock = clock
        self._refresh_s = refresh_s
        self._token: str | None = None
        self._issued_at = 0.0
        self.signed = 0  #: how many tokens were signed (observability, tests)

    def get(self) -> str:
        now = self._clock()
        if self._token is None or now - self._issued_at >= self._refresh_s:
            self._token = jwt.encode(
                {"iss": self._team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._issued_at = now
            self.signed += 1
        return self._token

    def expire(self, token: str) -> None:
        """APNs refused ``token`` as expired: sign a new one next time (unless already replaced)."""
        if token == self._token:
            self._token = None


@dataclass(frozen=True, slots=True)
class ApnsSettings:
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    key_id: str
    team_id: str
    topic: str
    base_url: str = APNS_PRODUCTION_URL
    ca_file: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApnsSettings:
        """Raises: ConfigurationError naming the variable that is missing or wrong."""
        read = SettingsReader(env)
        path = read.required("HERALD_APNS_KEY_FILE")
        try:
            key = load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError) as err:
            raise ConfigurationError(
                f"HERALD_APNS_KEY_FILE: cannot load a .p8 private key ({type(err).__name__})"
            ) from err
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ConfigurationError("HERALD_APNS_KEY_FILE: not a P-256 (ES256) key")
        default = APNS_SANDBOX_URL if read.flag("HERALD_APNS_SANDBOX") else APNS_PRODUCTION_URL
        return cls(
            key=key,
            key_id=read.required("HERALD_APNS_KEY_ID"),
            team_id=read.required("HERALD_APNS_TEAM_ID"),
            topic=read.required("HERALD_APNS_TOPIC"),
            base_url=read.url("HERALD_APNS_BASE_URL", default),
            ca_file=read.optional("HERALD_APNS_CA_FILE"),
            timeout_s=read.number("HERALD_APNS_TIMEOUT_S", 10.0),
        )


def apns_id(message_id: str) -> str:
    """Our message id as the ``apns-id`` UUID when it is one (``msg_<uuid>``), else a fresh UUID."""
    try:
        return str(uuid.UUID(message_id.removeprefix("msg_")))
    except ValueError:
        return str(uuid.uuid4())


def build_request(message: OutboundMessage, opts: PushOptions, topic: str) -> tuple[dict[str, str], bytes]:
    """The ``apns-*`` headers and JSON payload of one notification.

    Raises:
        PermanentError: the payload is over the APNs limit.
    """
    content = message.content
    push_type = opts.push_type or ("alert" if content.title or content.text else "background")
    aps: dict[str, Any] = {}
    if push_type == "background":
        aps["content-available"] = 1
    else:
        aps["alert"] = {k: v for k, v in (("title", content.title), ("body", content.text)) if v}
    if opts.sound is not None:
        aps["sound"] = opts.sound
    if opts.badge is not None:
        aps["badge"] = opts.badge
    override = opts.overrides.get("aps")
    if isinstance(override, Mapping):
        aps = deep_merge(aps, override)
    payload = {
        **{str(k): str(v) for k, v in content.data.items()},
        "notification_id": message.message_id,
        "aps": aps,
    }
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    limit = MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD
    if len(body) > limit:
        raise PermanentError(f"payload is {len(body)} bytes (limit {limit})", provider="apns", code="PayloadTooLarge")
    low = push_type == "background" or message.priority == "low"
    headers = {
        "apns-topic": topic + TOPIC_SUFFIX.get(push_type, ""),
        "apns-push-type": push_type,
        "apns-priority": "5" if low else "10",
        "apns-id": apns_id(message.message_id),
    }
    expiration = opts.expiration()
    if expiration is not None:
        headers["apns-expiration"] = str(expiration)
    if opts.collapse_id:
        headers["apns-collapse-id"] = opts.collapse_id
    return headers, body


class ApnsDriver(BaseDriver):
    """Apple Push Notification service, token auth, HTTP/2."""

    provider: ClassVar[str] = "apns"
    channel: ClassVar[Channel] = Channel.PUSH

    def __init__(
        self,
        settings: ApnsSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        verify: ssl.SSLContext | bool = True
        if settings.ca_file:
            verify = ssl.create_default_context(cafile=settings.ca_file)
        self._client = client or httpx.AsyncClient(
            base_url=settings.base_url, http2=True, verify=verify, timeout=settings.timeout_s
        )
        self.token = ProviderToken(settings.key, settings.key_id, settings.team_id, clock=clock)
        install_device_token_filter()  # httpx logs request URLs, and APNs puts the device token in the path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(ApnsSettings.from_env(env))

    async def send_one(self, message: OutboundMessage) -> SendResult:
        device = device_token(message, self.provider)
        headers, body = build_request(message, PushOptions.from_message(message), self.settings.topic)
        response = await self._post(device, headers, body)
        if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
            response = await self._post(device, headers, body)  # _post dropped the refused token
        if response.status_code == 200:
            log.debug("apns %s accepted (device %s)", message.message_id, mask_token(device))
            return SendResult(
                message.message_id,
                self.provider,
                provider_message_id=response.headers.get("apns-id", headers["apns-id"]),
                cost_usd=0.0,
            )
        raise classify(response.status_code, json_body(response), retry_after_s(response.headers))

    async def _post(self, device: str, headers: Mapping[str, str], body: bytes) -> httpx.Response:
        """One call; the boundary where transport failures are translated."""
        bearer = self.token.get()
        with HTTPX_ERRORS.boundary(self.provider):
            response = await self._client.post(
                f"/3/device/{device}", content=body, headers={**headers, "authorization": f"bearer {bearer}"}
            )
        if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
            self.token.expire(bearer)
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


def _reason(response: httpx.Response) -> str:
    return str(json_body(response).get("reason") or "")
