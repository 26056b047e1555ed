"""Twilio Messages API emulator (SMS and WhatsApp).

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` validated as Twilio does: HTTP Basic
(``20003``/401), the account in the path (``20404``/404), ``To`` (``21604``, E.164 ``21211``), ``From`` /
``MessagingServiceSid`` (``21603``, one of the account's senders ``21606``), a body or ``ContentSid``
(``21602``; known Content sid ``21655``; JSON ``ContentVariables`` ``21656``), same channel on both sides
(``21910``), body length (``21617``), opted-out recipients (``21610``) and landlines (``21614``). Success
is ``201`` with the message resource (``sid``, ``status``, ``num_segments``).

A message created with a ``StatusCallback`` gets its status callbacks there, as Twilio sends them: form
posts signed with ``X-Twilio-Signature`` (HMAC-SHA1 under the auth token over the callback URL and the
sorted parameters), ``sent`` then ``delivered``, or ``undelivered`` with the ``ErrorCode`` set for the
number by ``POST /_state {"undelivered": {"+E164": 30005}}``.

``GET /2010-04-01/Accounts/{AccountSid}.json`` (the drivers' health check) answers the account resource;
``POST /_state {"account_status": "suspended"}`` suspends the account (its sends then fail with
``20005``) until it is set ``active`` again. Script a failing check with a fault whose ``path`` is
``/Accounts/{AccountSid}.json``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from drivers.fakes.base import Answer, Callback, Emulator, Exchange, RunningEmulator, json_answer
from drivers.phone import parse_phone, sms_segments
from engine.errors import BadRecipientError

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "emulator-twilio-auth-token-0001"
SMS_FROM = "+14155550100"
WHATSAPP_FROM = "whatsapp:+14155238886"
MESSAGING_SERVICE_SID = "MG" + "0" * 31 + "1"
#: A Content template the emulator knows, with its variable count.
CONTENT_SID = "HX" + "b5b62575e6e4ff6129ad7c8efe1f983e"
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_ACCOUNT = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)\.json$")
_CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")
_ALNUM_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass
class TwilioState:
    """What the emulated account has and knows."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    senders: set[str] = field(default_factory=lambda: {SMS_FROM, WHATSAPP_FROM, "HERALD"})
    messaging_services: set[str] = field(default_factory=lambda: {MESSAGING_SERVICE_SID})
    content: dict[str, int] = field(default_factory=lambda: {CONTENT_SID: 1})
    opted_out: set[str] = field(default_factory=set)  #: replied STOP
    landlines: set[str] = field(default_factory=set)
    undelivered: dict[str, int] = field(default_factory=dict)  #: number -> the ErrorCode its callback reports
    account_status: str = "active"  #: active | suspended | closed


class TwilioApi:
    """The request handling, independent of the HTTP server that carries it."""

    def __init__(self, state: TwilioState | None = None) -> None:
        self.state = state or TwilioState()

    def authorized(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.state.account_sid) and secrets.compare_digest(
            password, self.state.auth_token
        )

    def create_message(self, path: str, authorization: str | None, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer one ``POST …/Messages.json`` as (status, JSON)."""
        if not self.authorized(authorization):
            return _error(401, 20003, "Authenticate")
        match = _PATH.match(path)
        if match is None or match["sid"] != self.state.account_sid:
            return _error(404, 20404, f"The requested resource {path} was not found")
        if self.state.account_status != "active":
            return _error(401, 20005, "Account not active")
        problem = self._validate(form)
        if problem is not None:
            return problem
        return 201, self._resource(form)

    def fetch_account(self, path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """Answer one ``GET /2010-04-01/Accounts/{sid}.json`` as (status, JSON)."""
        if not self.authorized(authorization):
            return _error(401, 20003, "Authenticate")
        match = _ACCOUNT.match(path)
        if match is None or match["sid"] != self.state.account_sid:
            return _error(404, 20404, f"The requested resource {path} was not found")
        sid = self.state.account_sid
        return 200, {
            "sid": sid,
            "friendly_name": "Herald emulator",
            "status": self.state.account_status,
            "type": "Full",
            "uri": f"/2010-04-01/Accounts/{sid}.json",
        }

    def _validate(self, form: dict[str, str]) -> tuple[int, dict[str, Any]] | None:  # noqa: C901 - Twilio's checks, in its order
        to, sender, service = form.get("To", ""), form.get("From", ""), form.get("MessagingServiceSid", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return _error(400, 21602, "Message body is required.")
        if sender and sender.startswith("whatsapp:") != to.startswith("whatsapp:"):
            return _error(400, 21910, "Invalid From and To pair. From and To should be of the same channel")
        try:
            number = parse_phone(to).e164
        except BadRecipientError:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if service and service not in self.state.messaging_services:
            return _error(400, 21705, "The Messaging Service Sid is invalid.")
        if sender and sender not in self.state.senders and not _ALNUM_SENDER.match(sender):
            return _error(
                400,
                21606,
                f"The From phone number {sender} is not a valid, SMS-capable inbound phone number "
                "or short code for your account.",
            )
        if len(form.get("Body", "")) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if form.get("ContentSid"):
            problem = self._validate_content(form)
            if problem is not None:
                return problem
        if number in self.state.opted_out:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        if number in self.state.landlines:
            return _error(400, 21614, f"'To' number {to} is not a valid mobile number")
        return None

    def _validate_content(self, form: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        sid = form["ContentSid"]
        if not _CONTENT_SID.match(sid) or sid not in self.state.content:
            return _error(400, 21655, "The ContentSid is Invalid.")
        try:
            variables = json.loads(form.get("ContentVariables") or "{}")
        except ValueError:
            variables = None
        if not isinstance(variables, dict) or len(variables) < self.state.content[sid]:
            return _error(400, 21656, "The ContentVariables Parameter is invalid.")
        return None

    def _resource(self, form: dict[str, str]) -> dict[str, Any]:
        sid = ("MM" if form.get("MediaUrl") else "SM") + uuid.uuid4().hex
        body = form.get("Body", "")
        now = formatdate(usegmt=False)
        service = form.get("MessagingServiceSid")
        return {
            "account_sid": self.state.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From") or None,
            "messaging_service_sid": service or None,
            "num_media": "1" if form.get("MediaUrl") else "0",
            "num_segments": str(max(1, sms_segments(body).segments)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.state.account_sid}/Messages/{sid}/Media.json"},
            "to": form["To"],
            "uri": f"/2010-04-01/Accounts/{self.state.account_sid}/Messages/{sid}.json",
        }


def env_for(base_url: str, *, state: TwilioState | None = None) -> dict[str, str]:
    """The settings that point the Twilio drivers at an emulator."""
    s = state or TwilioState()
    return {
        "HERALD_TWILIO_ACCOUNT_SID": s.account_sid,
        "HERALD_TWILIO_AUTH_TOKEN": s.auth_token,
        "HERALD_TWILIO_FROM": SMS_FROM,
        "HERALD_TWILIO_WHATSAPP_FROM": WHATSAPP_FROM,
        "HERALD_TWILIO_BASE_URL": base_url,
    }


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` as Twilio computes it for a form POST (single-valued parameters)."""
    text = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()).decode()


class TwilioEmulator(Emulator):
    """The Twilio Messages API over HTTP, and the status callbacks it makes."""

    name = "twilio"

    def __init__(self, state: TwilioState | None = None, *, inbound_url: str | None = None) -> None:
        super().__init__()
        self.api = TwilioApi(state)
        self.inbound_url = inbound_url  #: the number's "a message comes in" webhook

    def handle(self, request: Exchange) -> Answer:
        if request.method == "GET" and _ACCOUNT.match(request.path):
            return json_answer(*self.api.fetch_account(request.path, request.headers.get("authorization")))
        if request.method != "POST":
            return json_answer(*_error(405, 20004, "Method not allowed"))
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        status, doc = self.api.create_message(request.path, request.headers.get("authorization"), form)
        if status == 201 and form.get("StatusCallback"):
            self._report(form["StatusCallback"], doc)
        return json_answer(status, doc)

    def _report(self, url: str, resource: dict[str, Any]) -> None:
        to = str(resource["to"])
        code = self.api.state.undelivered.get(to.removeprefix("whatsapp:"))
        base = {
            "AccountSid": self.api.state.account_sid,
            "ApiVersion": "2010-04-01",
            "From": str(resource.get("from") or resource.get("messaging_service_sid") or ""),
            "MessageSid": resource["sid"],
            "SmsSid": resource["sid"],
            "To": to,
        }
        if to.startswith("whatsapp:"):
            base["ChannelPrefix"] = "whatsapp"
        steps = [{"MessageStatus": "sent", "SmsStatus": "sent"}]
        if code is None:
            steps.append({"MessageStatus": "delivered", "SmsStatus": "delivered", "RawDlrDoneDate": "2405021021"})
        else:
            steps.append({"MessageStatus": "undelivered", "SmsStatus": "undelivered", "ErrorCode": str(code)})
        self.notifier.post(*(self._callback(url, {**base, **step}) for step in steps))

    def _callback(self, url: str, params: dict[str, str]) -> Callback:
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": "TwilioProxy/1.1",
            "x-twilio-signature": twilio_signature(self.api.state.auth_token, url, params),
        }
        return Callback(url, urllib.parse.urlencode(params).encode(), headers)

    def reset_state(self) -> None:
        self.api.state.opted_out.clear()
        self.api.state.landlines.clear()
        self.api.state.undelivered.clear()
        self.api.state.account_status = "active"

    def control(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``{"opted_out": [...], "landlines": [...]}`` (E.164), ``{"content": {sid: variable count}}``
        (approved Content templates), ``{"undelivered": {"+E164": error code}}`` (its status callback says
        undelivered with that ``ErrorCode``), ``{"account_status": "active" | "suspended" | "closed"}``,
        ``{"reply": {"from": "+E164", "body": "STOP"}}`` (a recipient's message: posted, signed, to the
        incoming-message webhook; ``/_callbacks`` shows Herald's TwiML)."""
        if "account_status" in doc:
            self.api.state.account_status = str(doc["account_status"])
        reply = doc.get("reply")
        if reply and self.inbound_url:
            params = {
                "AccountSid": self.api.state.account_sid,
                "ApiVersion": "2010-04-01",
                "From": str(reply["from"]),
                "To": str(reply.get("to") or SMS_FROM),
                "Body": str(reply.get("body", "")),
                "MessageSid": "SM" + uuid.uuid4().hex,
                "NumMedia": "0",
            }
            self.notifier.post(self._callback(self.inbound_url, params), delay_s=0)
        self.api.state.content.update(doc.get("content", {}))
        self.api.state.opted_out.update(doc.get("opted_out", []))
        self.api.state.landlines.update(doc.get("landlines", []))
        self.api.state.undelivered.update({str(k): int(v) for k, v in (doc.get("undelivered") or {}).items()})
        return {"opted_out": len(self.api.state.opted_out), "landlines": len(self.api.state.landlines)}


def start_twilio(
    state: TwilioState | None = None, *, inbound_url: str | None = None
) -> tuple[RunningEmulator, dict[str, str]]:
    """Start the Twilio emulator (posting recipients' replies to ``inbound_url``, if given); returns it and
    the settings that point the drivers at it."""
    running = RunningEmulator(TwilioEmulator(state, inbound_url=inbound_url))
    return running, env_for(running.url, state=state)
