"""FCM HTTP v1 emulator, with Google's OAuth2 token endpoint for the service-account JWT exchange.

- ``POST /token``: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an RS256 ``assertion``
  signed by the emulator's service-account key (``iss`` = client email, ``aud`` = Google's token endpoint
  or this token URI, a messaging ``scope``, at most an hour) -> ``{"access_token", "expires_in",
  "token_type"}``; otherwise ``400 {"error": "invalid_grant", ...}``.
  :meth:`FcmState.credentials_json` is the key file to use.
- ``POST /v1/projects/{project}/messages:send``: bearer token issued here and still valid (else 401
  ``UNAUTHENTICATED``), the project (403 ``PERMISSION_DENIED``), exactly one target, string ``data``,
  ``android.priority``/``ttl`` formats, string APNs headers, payload size, token format (400
  ``INVALID_ARGUMENT`` with a ``BadRequest`` field violation), unregistered tokens (404 ``UNREGISTERED``).
  Success is ``200 {"name": "projects/{p}/messages/{id}"}``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from drivers.fakes.base import Answer, Emulator, Exchange, RunningEmulator, json_answer

PROJECT_ID = "herald-emulator"
CLIENT_EMAIL = f"herald-sender@{PROJECT_ID}.iam.gserviceaccount.com"
SCOPES = frozenset(
    {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
)
#: The audience google-auth (and Google) use for the assertion, whatever the token URI.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-:]{20,4096}$")
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def fcm_error(
    status: int, message: str, error_code: str | None = None, field_name: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Google's error envelope, with the FcmError detail (and a BadRequest field violation)."""
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": _FCM_ERROR, "errorCode": error_code})
    if field_name:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field_name, "description": message}],
            }
        )
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return status, {"error": error}


@dataclass
class FcmState:
    project_id: str = PROJECT_ID
    client_email: str = CLIENT_EMAIL
    token_ttl_s: int = 3600
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    key_id: str = field(default_factory=lambda: secrets.token_hex(20))
    access_tokens: dict[str, float] = field(default_factory=dict)  #: token -> expiry (unix s)
    unregistered: set[str] = field(default_factory=set)
    exchanges: int = 0

    def credentials_json(self, token_uri: str) -> dict[str, str]:
        """A service-account key file whose ``token_uri`` is this emulator."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }

    def revoke_tokens(self) -> None:
        self.access_tokens.clear()


class FcmApi:
    """The request handling, independent of the HTTP server that carries it."""

    def __init__(self, state: FcmState | None = None) -> None:
        self.state = state or FcmState()

    def token(self, token_uri: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer the JWT-bearer exchange."""
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self.state.key.public_key(),
                algorithms=["RS256"],
                audience=[token_uri, GOOGLE_TOKEN_AUDIENCE],
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.PyJWTError as err:
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {type(err).__name__}"}
        if claims["iss"] != self.state.client_email:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if claims["exp"] - claims["iat"] > 3600:
            return 400, {
                "error": "invalid_grant",
                "error_description": "Invalid JWT: exp too far in the future.",
            }
        if not SCOPES & set(str(claims["scope"]).split()):
            return 400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope."}
        access = "ya29.emu-" + secrets.token_urlsafe(32)
        self.state.access_tokens[access] = time.time() + self.state.token_ttl_s
        self.state.exchanges += 1
        return 200, {"access_token": access, "expires_in": self.state.token_ttl_s, "token_type": "Bearer"}

    def send(self, path: str, authorization: str | None, body: Any, raw_size: int) -> tuple[int, dict[str, Any]]:
        """Answer one ``messages:send``."""
        access = (authorization or "").removeprefix("Bearer ").strip()
        if self.state.access_tokens.get(access, 0.0) <= time.time():
            return fcm_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
        match = _SEND_PATH.match(path)
        if match is None or match["project"] != self.state.project_id:
            return fcm_error(
                403, "Permission 'cloudmessaging.messages.create' denied on resource (or it may not exist)."
            )
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return fcm_error(400, "Invalid JSON payload received. Unknown name: message", "INVALID_ARGUMENT")
        problem = self._validate(message, raw_size)
        if problem is not None:
            return problem
        token = message.get("token")
        if token in self.state.unregistered:
            return fcm_error(404, "Requested entity was not found.", "UNREGISTERED")
        suffix = (
            "fake_message_id" if body.get("validate_only") else f"0:{int(time.time() * 1e6)}%{secrets.token_hex(8)}"
        )
        return 200, {"name": f"projects/{self.state.project_id}/messages/{suffix}"}

    def _validate(self, message: dict[str, Any], raw_size: int) -> tuple[int, dict[str, Any]] | None:
        targets = [k for k in ("token", "topic", "condition") if message.get(k)]
        if len(targets) != 1:
            return fcm_error(400, "Exactly one of token, topic or condition must be specified.", "INVALID_ARGUMENT")
        token = message.get("token")
        if token is not None and not _TOKEN.match(str(token)):
            return fcm_error(
                400,
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
                "message.token",
            )
        data = message.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return fcm_error(
                400,
                "Invalid value at 'message.data': values must be strings",
                "INVALID_ARGUMENT",
                "message.data",
            )
        notification = message.get("notification") or {}
        if not all(isinstance(notification.get(k, ""), str) for k in ("title", "body", "image")):
            return fcm_error(400, "Invalid value at 'message.notification'", "INVALID_ARGUMENT", "message.notification")
        android = message.get("android") or {}
        if android.get("priority", "normal").lower() not in ("normal", "high"):
            return fcm_error(
                400,
                "Invalid value at 'message.android.priority'",
                "INVALID_ARGUMENT",
                "message.android.priority",
            )
        if "ttl" in android and not _TTL.match(str(android["ttl"])):
            return fcm_error(
                400,
                "Invalid value at 'message.android.ttl' (Duration)",
                "INVALID_ARGUMENT",
                "message.android.ttl",
            )
        headers = (message.get("apns") or {}).get("headers") or {}
        if not all(isinstance(v, str) for v in headers.values()):
            return fcm_error(
                400,
                "Invalid value at 'message.apns.headers': values must be strings",
                "INVALID_ARGUMENT",
                "message.apns.headers",
            )
        if raw_size > 4096 + 512 or len(json.dumps(message).encode()) > 4096 + 256:
            return fcm_error(400, "Message is too big", "INVALID_ARGUMENT")
        return None


def env_for(base_url: str, credentials_file: str, *, state: FcmState | None = None) -> dict[str, str]:
    """The settings that point the FCM driver at an emulator."""
    s = state or FcmState()
    return {
        "HERALD_FCM_PROJECT_ID": s.project_id,
        "HERALD_FCM_CREDENTIALS_FILE": credentials_file,
        "HERALD_FCM_BASE_URL": base_url,
        "HERALD_FCM_TOKEN_URI": f"{base_url}/token",
    }


class FcmEmulator(Emulator):
    """FCM HTTP v1 plus the OAuth2 token endpoint, over HTTP."""

    name = "fcm"

    def __init__(self, state: FcmState | None = None) -> None:
        super().__init__()
        self.api = FcmApi(state)

    def handle(self, request: Exchange) -> Answer:
        if request.path == "/token" and request.method == "POST":
            form = dict(urllib.parse.parse_qsl(request.body.decode()))
            return json_answer(*self.api.token(f"{request.base_url}/token", form))
        if request.method != "POST":
            return json_answer(*fcm_error(404, "Not found"))
        try:
            payload = json.loads(request.body or b"null")
        except ValueError:
            payload = None
        authorization = request.headers.get("authorization")
        return json_answer(*self.api.send(request.path, authorization, payload, len(request.body)))

    def reset_state(self) -> None:
        self.api.state.unregistered.clear()
        self.api.state.token_ttl_s = 3600

    def control(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``{"unregistered": [tokens], "revoke_tokens": true, "token_ttl_s": n}``."""
        state = self.api.state
        state.unregistered.update(doc.get("unregistered", []))
        if doc.get("revoke_tokens"):
            state.revoke_tokens()
        if "token_ttl_s" in doc:
            state.token_ttl_s = int(doc["token_ttl_s"])
        return {"exchanges": state.exchanges}


def start_fcm(directory: Path, state: FcmState | None = None) -> tuple[RunningEmulator, dict[str, str]]:
    """Start the FCM emulator and write its service-account file in ``directory``; returns it, settings."""
    emulator = FcmEmulator(state)
    running = RunningEmulator(emulator)
    directory.mkdir(parents=True, exist_ok=True)
    credentials = directory / "fcm-service-account.json"
    credentials.write_text(json.dumps(emulator.api.state.credentials_json(f"{running.url}/token")))
    credentials.chmod(0o600)
    return running, env_for(running.url, str(credentials), state=emulator.api.state)
