"""SendGrid v3 Mail Send emulator.

``POST /v3/mail/send`` is validated as SendGrid does: Bearer auth (401), ``personalizations`` with ``to``
addresses, ``from.email``, ``subject`` (top level or in every personalization), ``content`` (unless
``template_id``), well-formed addresses (400 naming the field); success is ``202`` with an empty body and
an ``X-Message-Id`` header. ``GET /v3/scopes`` (the health check) lists the key's scopes (``mail.send``
unless ``POST /_state {"scopes": [...]}`` says otherwise); script its failure with a fault whose
``path`` is ``/v3/scopes``. Faults, recorder and control endpoints: :mod:`drivers.fakes.base`.

With an event webhook URL (``webhook_url``, or ``POST /_state {"webhook_url": ...}``) every accepted
message is reported as SendGrid's signed Event Webhook reports it: ``processed`` then ``delivered`` per
recipient, or a ``bounce`` (``type: bounce``, 5.1.1) for addresses marked to bounce and a soft one
(``type: blocked``) for addresses marked blocked (``POST /_state {"bounce": [...], "blocked": [...]}``),
with the personalization's ``custom_args`` flattened in. Events are batched (what arrives within
:attr:`SendgridEmulator.batch_window_s` goes in one POST) and signed with the emulator's ECDSA P-256 key:
its public key, base64 DER as SendGrid shows it, is ``HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.fakes.base import Answer, Callback, Emulator, Exchange, RunningEmulator, json_answer

API_KEY = "SG.emulator-key.emulator-secret-0001"
FROM_EMAIL = "no-reply@herald.local"
#: The scopes of the emulator's API key (a full-access key has many more).
SCOPES = ("mail.send", "user.profile.read")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_UNAUTHORIZED = {
    "errors": [
        {"message": "The provided authorization grant is invalid, expired, or revoked", "field": None, "help": None}
    ]
}


def sg_error(message: str, field_name: str | None = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field_name, "help": None}]}


def validate(doc: Any) -> dict[str, Any] | None:  # noqa: C901 - SendGrid's checks, in its order
    """The 400 body SendGrid would answer, or None when the request is valid."""
    if not isinstance(doc, dict):
        return sg_error("Bad Request", None)
    personalizations = doc.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return sg_error(
            "The personalizations field is required and must have at least one personalization.", "personalizations"
        )
    for i, p in enumerate(personalizations):
        to = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to, list) or not to:
            return sg_error("The to array is required for all personalization objects.", f"personalizations.{i}.to")
        for j, person in enumerate(to):
            if not isinstance(person, dict) or not _EMAIL.match(str(person.get("email", ""))):
                return sg_error("Does not contain a valid address.", f"personalizations.{i}.to.{j}.email")
    sender = doc.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        return sg_error("The from object must be provided for every email send.", "from")
    if not _EMAIL.match(str(sender["email"])):
        return sg_error("The from email does not contain a valid address.", "from.email")
    has_template = bool(doc.get("template_id"))
    if not doc.get("subject") and not has_template and not all(p.get("subject") for p in personalizations):
        return sg_error(
            "The subject is required. You can get around this requirement if you use a template "
            "with a subject defined or if every personalization has a subject defined.",
            "subject",
        )
    content = doc.get("content")
    if not has_template and (not isinstance(content, list) or not content):
        return sg_error("Unless a valid template_id is provided, the content parameter is required.", "content")
    for k, block in enumerate(content or []):
        if not isinstance(block, dict) or not block.get("type") or not isinstance(block.get("value"), str):
            return sg_error("The content value must be a string at least one character in length.", f"content.{k}")
    headers = doc.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return sg_error("Invalid type. Expected: object, given: other.", "headers")
    categories = doc.get("categories", [])
    if len(categories) > 10:
        return sg_error("Too many categories. The maximum number of categories is 10.", "categories")
    return None


class SendgridEmulator(Emulator):
    """The Mail Send endpoint over HTTP, and the signed Event Webhook it reports to."""

    name = "sendgrid"
    batch_window_s = 0.2

    def __init__(self, api_key: str = API_KEY, *, webhook_url: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.signing_key = ec.generate_private_key(ec.SECP256R1())
        self.bounce: set[str] = set()
        self.blocked: set[str] = set()
        self.scopes: list[str] = list(SCOPES)
        self._pending: list[dict[str, Any]] = []
        self._flush_scheduled = False

    @property
    def public_key(self) -> str:
        """The verification key as SendGrid's settings page shows it (base64 DER)."""
        der = self.signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def signed(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        """The headers SendGrid puts on an Event Webhook POST of ``body``."""
        stamp = timestamp or str(int(time.time()))
        signature = self.signing_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "content-type": "application/json",
            "user-agent": "SendGrid Event API",
            "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
            "x-twilio-email-event-webhook-timestamp": stamp,
        }

    def _report(self, doc: dict[str, Any], message_id: str) -> None:
        if not self.webhook_url:
            return
        now = int(time.time())
        shared = doc.get("custom_args") if isinstance(doc.get("custom_args"), dict) else {}
        for personalization in doc["personalizations"]:
            args = {**shared, **(personalization.get("custom_args") or {})}
            for person in personalization["to"]:
                self._pending += _events(str(person["email"]), message_id, args, now, self._outcome(person["email"]))
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.batch_window_s, self._flush)

    def _outcome(self, email: str) -> str:
        address = email.lower()
        return "bounce" if address in self.bounce else "blocked" if address in self.blocked else "delivered"

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if batch and self.webhook_url:
            body = json.dumps(batch).encode() + b"\r\n"  # SendGrid's bodies end with CRLF
            self.notifier.post(Callback(self.webhook_url, body, self.signed(body)), delay_s=0)

    def handle(self, request: Exchange) -> Answer:
        route = (request.method, request.path)
        if route not in (("POST", "/v3/mail/send"), ("GET", "/v3/scopes")):
            return json_answer(404, sg_error("Not found"))
        auth = request.headers.get("authorization", "")
        if not (auth.startswith("Bearer ") and secrets.compare_digest(auth[7:].strip(), self.api_key)):
            return json_answer(401, _UNAUTHORIZED)
        if route[0] == "GET":
            return json_answer(200, {"scopes": self.scopes})
        try:
            doc: Any = json.loads(request.body or b"null")
        except ValueError:
            doc = None
        problem = validate(doc)
        if problem is not None:
            return json_answer(400, problem)
        message_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")[:22]
        self._report(doc, message_id)
        return 202, {"x-message-id": message_id}, b""

    def reset_state(self) -> None:
        self.bounce.clear()
        self.blocked.clear()
        self.scopes = list(SCOPES)

    def control(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``{"webhook_url": url or null, "bounce": [emails], "blocked": [emails], "scopes": [...]}``."""
        if "webhook_url" in doc:
            self.webhook_url = doc["webhook_url"]
        if "scopes" in doc:
            self.scopes = [str(s) for s in doc["scopes"]]
        self.bounce.update(str(e).lower() for e in doc.get("bounce", []))
        self.blocked.update(str(e).lower() for e in doc.get("blocked", []))
        return {"webhook_url": self.webhook_url, "bounce": len(self.bounce), "blocked": len(self.blocked)}


def _events(email: str, message_id: str, args: dict[str, Any], now: int, outcome: str) -> list[dict[str, Any]]:
    """``processed``, then ``delivered`` or a ``bounce``, for one recipient, as SendGrid posts them."""
    common = {
        "email": email,
        "smtp-id": f"<{message_id}@emulator.sendgrid.net>",
        "sg_message_id": f"{message_id}.filterdrecv-emulator-1-0.0",
        **{k: str(v) for k, v in args.items()},
    }
    processed = {**common, "timestamp": now, "event": "processed", "sg_event_id": secrets.token_urlsafe(16)}
    final: dict[str, Any] = {**common, "timestamp": now + 1, "sg_event_id": secrets.token_urlsafe(16)}
    if outcome == "delivered":
        final.update(event="delivered", response="250 2.0.0 OK accepted", ip="127.0.0.1", tls=1)
    elif outcome == "bounce":
        final.update(
            event="bounce",
            type="bounce",
            status="5.1.1",
            reason="550 5.1.1 The email account that you tried to reach does not exist.",
            bounce_classification="Invalid Address",
        )
    else:
        final.update(
            event="bounce",
            type="blocked",
            status="4.7.1",
            reason="421 4.7.1 Try again later, closing connection.",
            bounce_classification="Reputation",
        )
    return [processed, final]


def env_for(base_url: str, api_key: str = API_KEY, *, public_key: str | None = None) -> dict[str, str]:
    """The settings that point the SendGrid driver (and, with ``public_key``, the webhook) at an emulator."""
    env = {
        "HERALD_SENDGRID_API_KEY": api_key,
        "HERALD_SENDGRID_BASE_URL": base_url,
        "HERALD_SENDGRID_FROM": f"Herald <{FROM_EMAIL}>",
    }
    if public_key:
        env["HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY"] = public_key
    return env


def start_sendgrid(api_key: str = API_KEY, *, webhook_url: str | None = None) -> tuple[RunningEmulator, dict[str, str]]:
    """Start the SendGrid emulator (reporting events to ``webhook_url``, if given); returns it and the
    settings that point the driver and the webhook's verification at it."""
    emulator = SendgridEmulator(api_key, webhook_url=webhook_url)
    running = RunningEmulator(emulator)
    return running, env_for(running.url, api_key, public_key=emulator.public_key)
