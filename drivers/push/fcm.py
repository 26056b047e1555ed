"""FCM HTTP v1: ``POST {base}/v1/projects/{project}/messages:send`` with an OAuth2 bearer token.

The token comes from the service-account JWT exchange: google-auth's signer signs the assertion (RS256,
``scope`` firebase.messaging, ``aud`` = Google's token endpoint), which is POSTed to ``token_uri`` here
(not through google-auth's requests transport, whose DEBUG request log would carry the assertion). Tokens are cached
until ``margin_s`` before expiry, and a 401 ``UNAUTHENTICATED`` refreshes once and retries.

FCM has no batch endpoint any more: a batch is one request per message over one HTTP/2 pool. Failures
are classified by the ``FcmError.errorCode`` (else the ``google.rpc`` status) in :data:`FCM_ERRORS`.

Settings: ``HERALD_FCM_CREDENTIALS_FILE`` (service-account JSON), ``HERALD_FCM_PROJECT_ID`` (default: the
file's ``project_id``), optional ``HERALD_FCM_BASE_URL``, ``HERALD_FCM_TOKEN_URI`` (default: the file's),
``HERALD_FCM_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx
from google.auth import crypt
from google.auth import jwt as google_jwt

from drivers.base import BaseDriver
from drivers.http import HTTPX_ERRORS, json_body
from drivers.push import PushOptions, deep_merge, device_token
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

FCM_BASE_URL = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The assertion's audience is Google's token endpoint whatever ``token_uri`` says (as google-auth does).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"

#: FCM errorCode (or google.rpc status when there is none) -> (failure class, default retry-after s).
FCM_ERRORS: dict[str, tuple[type[DispatchError], float | None]] = {
    "UNREGISTERED": (BadRecipientError, None),  # token dead
    "SENDER_ID_MISMATCH": (BadRecipientError, None),  # token of another project
    "INVALID_ARGUMENT": (PermanentError, None),  # BadRecipient when the bad field is the token
    "QUOTA_EXCEEDED": (ThrottledError, 60.0),  # FCM asks for at least a minute
    "UNAVAILABLE": (RetryableError, None),
    "INTERNAL": (RetryableError, None),
    "THIRD_PARTY_AUTH_ERROR": (ProviderDownError, None),  # APNs/web-push credentials at FCM are wrong
    "APNS_AUTH_ERROR": (ProviderDownError, None),
    "UNSPECIFIED_ERROR": (RetryableError, None),
    "UNAUTHENTICATED": (ProviderDownError, None),  # still 401 after a fresh token
    "PERMISSION_DENIED": (ProviderDownError, None),  # service account lacks the role
    "NOT_FOUND": (ProviderDownError, None),  # project not found
    "RESOURCE_EXHAUSTED": (ThrottledError, 60.0),
}


def fcm_error_code(body: Mapping[str, Any] | None) -> tuple[str | None, bool]:
    """(FCM errorCode or google.rpc status, whether a field violation names the token)."""
    error = (body or {}).get("error") or {}
    details = error.get("details") or []
    code: str | None = None
    token_field = False
    for detail in details if isinstance(details, list) else []:
        if detail.get("@type") == _FCM_ERROR_TYPE:
            code = detail.get("errorCode")
        elif detail.get("@type") == _BAD_REQUEST_TYPE:
            fields = [v.get("field", "") for v in detail.get("fieldViolations") or []]
            token_field = any(f.endswith("token") for f in fields)
    return code or error.get("status"), token_field


def classify(status: int, body: Mapping[str, Any] | None, retry_after: float | None) -> DispatchError:
    """Translate one FCM error answer ``{"error": {"code", "message", "status", "details"}}``."""
    code, token_field = fcm_error_code(body)
    message = str(((body or {}).get("error") or {}).get("message") or f"HTTP {status}")
    kind, default_after = FCM_ERRORS.get(code or "", (None, None))
    if code == "INVALID_ARGUMENT" and (token_field or "registration token" in message):
        kind = BadRecipientError
    return classified(
        kind,
        provider="fcm",
        status=status,
        detail=message,
        code=code,
        retry_after_s=retry_after if retry_after is not None else default_after,
        throttle_after_s=60.0,
    )


class ServiceAccountTokens:
    """OAuth2 access tokens for one service account, cached and refreshed under a lock."""

    def __init__(
        self,
        info: Mapping[str, Any],
        client: httpx.AsyncClient,
        *,
        token_uri: str | None = None,
        scope: str = FCM_SCOPE,
        clock: Callable[[], float] = time.time,
        margin_s: float = 300.0,
    ) -> None:
        self._signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]  # google-auth is untyped
        self._email = str(info["client_email"])
        self.token_uri = token_uri or str(info["token_uri"])
        self._scope = scope
        self._client = client
        self._clock = clock
        self._margin_s = margin_s
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0  #: how many exchanges were made (observability, tests)

    async def token(self) -> str:
        """A valid access token.

        Raises:
            ProviderDownError: the exchange failed (bad key, unreachable token endpoint).
        """
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._margin_s:
                await self._refresh()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` after the API refused it (another request may already have replaced it)."""
        if token == self._token:
            self._token = None

    async def _refresh(self) -> None:
        now = int(time.time())  # the assertion's own times are wall-clock; the injected clock only paces the cache
        claims = {
            "iss": self._email,
            "scope": self._scope,
            "aud": GOOGLE_TOKEN_AUDIENCE,
            "iat": now,
            "exp": now + 3600,
        }
        assertion = google_jwt.encode(self._signer, claims).decode()  # type: ignore[no-untyped-call]
        try:
            response = await self._client.post(
                self.token_uri, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
            )
        except httpx.TransportError as err:
            raise ProviderDownError("OAuth token endpoint unreachable", provider="fcm", code="token") from err
        if response.status_code != 200:
            try:
                reason = str(response.json().get("error", "")) or f"HTTP {response.status_code}"
            except ValueError:
                reason = f"HTTP {response.status_code}"
            raise ProviderDownError(f"OAuth token exchange refused: {reason}", provider="fcm", code="token")
        doc = response.json()
        self._token = str(doc["access_token"])
        self._expires_at = self._clock() + float(doc.get("expires_in", 3600))
        self.refreshes += 1
        log.debug("fcm: new OAuth access token, valid %ss", doc.get("expires_in", 3600))


@dataclass(frozen=True, slots=True)
class FcmSettings:
    project_id: str
    credentials: Mapping[str, Any] = field(repr=False)
    base_url: str = FCM_BASE_URL
    token_uri: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FcmSettings:
        """Raises: ConfigurationError naming the variable that is missing or wrong."""
        read = SettingsReader(env)
        path = read.required("HERALD_FCM_CREDENTIALS_FILE")
        try:
            info = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ConfigurationError(
                f"HERALD_FCM_CREDENTIALS_FILE: cannot read a service-account JSON ({err})"
            ) from err
        missing = [k for k in ("client_email", "private_key", "token_uri") if k not in info]
        if missing:
            raise ConfigurationError(f"HERALD_FCM_CREDENTIALS_FILE: service-account JSON lacks {', '.join(missing)}")
        project = read.optional("HERALD_FCM_PROJECT_ID") or info.get("project_id")
        if not project:
            raise ConfigurationError("HERALD_FCM_PROJECT_ID is not set (and the credentials name no project_id)")
        return cls(
            project_id=str(project),
            credentials=info,
            base_url=read.url("HERALD_FCM_BASE_URL", FCM_BASE_URL),
            token_uri=read.optional("HERALD_FCM_TOKEN_URI"),
            timeout_s=read.number("HERALD_FCM_TIMEOUT_S", 10.0),
        )


def build_message(message: OutboundMessage, token: str, opts: PushOptions) -> dict[str, Any]:
    """FCM's ``message`` object: notification + string data + android/apns/webpush settings + overrides."""
    content = message.content
    body: dict[str, Any] = {"token": token}
    notification = {k: v for k, v in (("title", content.title), ("body", content.text)) if v}
    if notification:
        body["notification"] = notification
    data = {str(k): str(v) for k, v in content.data.items()}
    data.setdefault("notification_id", message.message_id)
    body["data"] = data
    android: dict[str, Any] = {"priority": "high" if opts.high_priority else "normal"}
    apns_headers = {"apns-priority": "10" if opts.high_priority else "5"}
    webpush_headers = {"Urgency": "high" if opts.high_priority else "normal"}
    if opts.ttl_seconds is not None:
        android["ttl"] = f"{opts.ttl_seconds}s"
        apns_headers["apns-expiration"] = str(opts.expiration())
        webpush_headers["TTL"] = str(opts.ttl_seconds)
    if opts.collapse_id:
        android["collapse_key"] = opts.collapse_id
        apns_headers["apns-collapse-id"] = opts.collapse_id
    if opts.push_type:
        apns_headers["apns-push-type"] = opts.push_type
    aps: dict[str, Any] = {k: v for k, v in (("sound", opts.sound), ("badge", opts.badge)) if v is not None}
    apns: dict[str, Any] = {"headers": apns_headers}
    if aps:
        apns["payload"] = {"aps": aps}
    body.update(android=android, apns=apns, webpush={"headers": webpush_headers})
    for key in ("android", "apns", "webpush", "fcm_options"):
        override = opts.overrides.get(key)
        if isinstance(override, Mapping):
            body[key] = deep_merge(body.get(key, {}), override)
    return body


class FcmDriver(BaseDriver):
    """Firebase Cloud Messaging (HTTP v1)."""

    provider: ClassVar[str] = "fcm"
    channel: ClassVar[Channel] = Channel.PUSH

    def __init__(
        self,
        settings: FcmSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._client = client or httpx.AsyncClient(http2=True, timeout=settings.timeout_s)
        self.tokens = ServiceAccountTokens(
            settings.credentials, self._client, token_uri=settings.token_uri, clock=clock
        )
        self._url = f"{settings.base_url}/v1/projects/{settings.project_id}/messages:send"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(FcmSettings.from_env(env))

    async def send_one(self, message: OutboundMessage) -> SendResult:
        token = device_token(message, self.provider)
        payload = {"message": build_message(message, token, PushOptions.from_message(message))}
        response = await self._post(payload)
        if response.status_code == 401 and fcm_error_code(json_body(response))[0] == "UNAUTHENTICATED":
            response = await self._post(payload)  # the token was refused: _post dropped it, this gets a new one
        if response.status_code == 200:
            name = str(json_body(response).get("name") or "")
            log.debug("fcm %s accepted", message.message_id)
            return SendResult(message.message_id, self.provider, provider_message_id=name, cost_usd=0.0)
        raise classify(response.status_code, json_body(response), retry_after_s(response.headers))

    async def _post(self, payload: Mapping[str, Any]) -> httpx.Response:
        """One call; the boundary where transport failures are translated."""
        access = await self.tokens.token()
        with HTTPX_ERRORS.boundary(self.provider):
            response = await self._client.post(self._url, json=payload, headers={"Authorization": f"Bearer {access}"})
        if response.status_code == 401 and fcm_error_code(json_body(response))[0] == "UNAUTHENTICATED":
            self.tokens.invalidate(access)  # FCM refused our OAuth token (THIRD_PARTY_AUTH_ERROR is not about it)
        return response

    async def aclose(self) -> None:
        await self._client.aclose()
