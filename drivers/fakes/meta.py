"""Meta WhatsApp Cloud API emulator: ``POST /{version}/{phone-number-id}/messages``.

Validated as Graph does, answering Graph's error envelope ``{"error": {"message", "type", "code",
"error_data", "fbtrace_id"}}``: bearer token (``190``/401), the phone number id (``100``), JSON with
``messaging_product: whatsapp`` (``100``), ``to`` as bare digits (``131009``; Graph itself also takes a
leading ``+``, the emulator holds Herald to the documented form), a known ``type``
(``131051``), text body (``131008``), templates that exist in that language (``132001``) with the right
parameter count (``132000``), the button components an approved template takes (a missing one
``131008``, a wrong count ``132000``), an authentication template's code (at most 15 characters, and
the same code on its copy-code button: ``131009``), the 24 h window for free-form text when the emulator tracks windows
(``131047``), and recipients that are not on WhatsApp (``131026``). Success is ``200`` with
``contacts`` and ``messages[0].id`` (``wamid.…``).

``GET /{version}/{phone-number-id}`` (the driver's health check) answers the number's node with the
``fields`` asked for (else Graph's default ones), after the same token check; an unknown id is Graph's
``100``, an unknown field ``100`` too. ``health_status`` is Meta's messaging health: ``can_send_message``
``AVAILABLE`` until ``POST /_state {"can_send_message": "LIMITED" | "BLOCKED"}`` (a blocked number carries
an ``errors`` entry, ``131031``); ``{"quality_rating": "YELLOW"}`` sets the rating.

With a webhook URL (``webhook_url``, or ``POST /_state {"webhook_url": ...}``) every accepted message is
reported as Meta reports it: status webhooks signed with ``X-Hub-Signature-256`` (HMAC-SHA256 under the
app secret, ``HERALD_META_APP_SECRET``), ``sent`` then ``delivered``, or ``failed`` with the error code set
for the number by ``POST /_state {"fail": {"digits": 131049}}``; each status echoes the send's
``biz_opaque_callback_data``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from drivers.fakes.base import Answer, Callback, Emulator, Exchange, RunningEmulator, json_answer

TOKEN = "emulator-meta-system-user-token-0001"
PHONE_NUMBER_ID = "106540352242922"
APP_SECRET = "emulator-meta-app-secret-0001"
VERIFY_TOKEN = "emulator-meta-verify-token-0001"
DISPLAY_NUMBER = "15550783881"
VERIFIED_NAME = "Herald Emulator"
WABA_ID = "102290129340398"
BUSINESS_ID = "506914307656634"
APP_ID = "634974688087057"
#: What ``GET /{phone-number-id}`` answers without ``fields``.
DEFAULT_NUMBER_FIELDS = (
    "verified_name",
    "code_verification_status",
    "display_phone_number",
    "quality_rating",
    "platform_type",
    "throughput",
)
#: Meta's parameter object for each button sub-type that takes a value.
_BUTTON_PARAMETER = {"url": "text", "quick_reply": "payload", "copy_code": "coupon_code"}
#: The longest one-time code an authentication template takes.
MAX_CODE_LENGTH = 15


@dataclass(frozen=True)
class ApprovedTemplate:
    """One approved template in one language: its body parameters and the buttons that take a value."""

    body: int = 0
    buttons: dict[int, str] = field(default_factory=dict)  #: index -> sub_type
    category: str = "utility"

    @classmethod
    def from_doc(cls, doc: Any) -> ApprovedTemplate:
        """A body parameter count, or ``{"body", "buttons": [{"sub_type"}], "category"}``."""
        if isinstance(doc, ApprovedTemplate):
            return doc
        if isinstance(doc, int):
            return cls(body=doc)
        buttons = {i: str(b["sub_type"]) for i, b in enumerate(doc.get("buttons") or [])}
        return cls(int(doc.get("body", 0)), buttons, str(doc.get("category", "utility")).lower())


#: Meta's copy-code authentication template: the code in the body and on the button (index 0).
AUTHENTICATION = ApprovedTemplate(body=1, buttons={0: "url"}, category="authentication")
#: Approved templates: name -> {language: template}.
TEMPLATES: dict[str, dict[str, ApprovedTemplate]] = {
    "order_shipped": {"en_US": ApprovedTemplate(1), "de_DE": ApprovedTemplate(1)},
    "otp_login": {"en": AUTHENTICATION, "en_GB": AUTHENTICATION, "en_US": AUTHENTICATION},
}
_PATH = re.compile(r"^/(?P<version>v\d+\.\d+)/(?P<pnid>[^/]+)/messages$")
_NODE = re.compile(r"^/(?P<version>v\d+\.\d+)/(?P<pnid>[^/]+)$")
_DIGITS = re.compile(r"^\d{7,15}$")
_TYPES = frozenset(
    {
        "text",
        "template",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "reaction",
    }
)


def graph_error(status: int, code: int, message: str, details: str | None = None) -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {
        "message": f"(#{code}) {message}" if code not in (190,) else message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "A" + secrets.token_urlsafe(16),
    }
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return status, {"error": error}


@dataclass
class MetaState:
    token: str = TOKEN
    phone_number_id: str = PHONE_NUMBER_ID
    templates: dict[str, dict[str, ApprovedTemplate]] = field(
        default_factory=lambda: {k: dict(v) for k, v in TEMPLATES.items()}
    )
    #: None: every service window is open; a set: only these recipients (digits) wrote in the last 24 h.
    open_windows: set[str] | None = None
    not_on_whatsapp: set[str] = field(default_factory=set)
    app_secret: str = APP_SECRET
    #: recipient (digits) -> the error code its ``failed`` status webhook reports after the send
    fail: dict[str, int] = field(default_factory=dict)
    #: the phone number's messaging health: AVAILABLE, LIMITED or BLOCKED
    can_send_message: str = "AVAILABLE"
    quality_rating: str = "GREEN"


class MetaApi:
    """The request handling, independent of the HTTP server that carries it."""

    def __init__(self, state: MetaState | None = None) -> None:
        self.state = state or MetaState()

    def authorized(self, authorization: str | None) -> bool:
        token = (authorization or "").removeprefix("Bearer ").strip()
        return bool(token) and secrets.compare_digest(token, self.state.token)

    def _refused(
        self, verb: str, route: re.Pattern[str], path: str, authorization: str | None
    ) -> tuple[int, dict[str, Any]] | None:
        """Graph's answer when the token is not this account's or the path names another number, else None."""
        if not self.authorized(authorization):
            return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        match = route.match(path)
        if match is None or match["pnid"] != self.state.phone_number_id:
            return graph_error(
                400,
                100,
                f"Unsupported {verb} request. Object with ID '{match['pnid'] if match else path}' does not "
                "exist, cannot be loaded due to missing permissions, or does not support this operation",
            )
        return None

    def phone_number(self, path: str, authorization: str | None, fields: str | None) -> tuple[int, dict[str, Any]]:
        """Answer one ``GET /{version}/{phone-number-id}?fields=...`` as (status, JSON)."""
        refused = self._refused("get", _NODE, path, authorization)
        if refused is not None:
            return refused
        node = self._number_node()
        wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else list(DEFAULT_NUMBER_FIELDS)
        unknown = next((f for f in wanted if f not in node), None)
        if unknown is not None:
            return graph_error(
                400, 100, f"Tried accessing nonexisting field ({unknown}) on node type (WhatsAppBusinessPhoneNumber)"
            )
        return 200, {**{f: node[f] for f in wanted}, "id": self.state.phone_number_id}

    def _number_node(self) -> dict[str, Any]:
        """Every field of the phone number node the emulator knows."""
        state = self.state
        verdict = state.can_send_message
        number: dict[str, Any] = {"entity_type": "PHONE_NUMBER", "id": state.phone_number_id}
        number["can_send_message"] = verdict
        if verdict == "BLOCKED":
            number["errors"] = [
                {
                    "error_code": 131031,
                    "error_description": "The WhatsApp Business Account is restricted from messaging.",
                    "possible_solution": "Resolve the restriction in WhatsApp Manager, then try again.",
                }
            ]
        elif verdict == "LIMITED":
            number["additional_info"] = ["The phone number's messaging limit was lowered for low quality."]
        others = [("WABA", WABA_ID), ("BUSINESS", BUSINESS_ID), ("APP", APP_ID)]
        entities = [number, *({"entity_type": t, "id": i, "can_send_message": "AVAILABLE"} for t, i in others)]
        return {
            "verified_name": VERIFIED_NAME,
            "code_verification_status": "VERIFIED",
            "display_phone_number": "+1 555-078-3881",  # DISPLAY_NUMBER as Meta formats it
            "quality_rating": state.quality_rating,
            "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"},
            "status": "CONNECTED",
            "name_status": "APPROVED",
            "messaging_limit_tier": "TIER_1K",
            "account_mode": "LIVE",
            "health_status": {"can_send_message": verdict, "entities": entities},
        }

    def send(self, path: str, authorization: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        """Answer one ``POST /{version}/{phone-number-id}/messages`` as (status, JSON)."""
        refused = self._refused("post", _PATH, path, authorization)
        if refused is not None:
            return refused
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return graph_error(400, 100, "The parameter messaging_product is required.")
        problem = self._validate(body)
        if problem is not None:
            return problem
        to = str(body["to"])
        message: dict[str, Any] = {"id": "wamid." + base64.b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")}
        if body.get("type") == "template":
            message["message_status"] = "accepted"
        return 200, {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [message],
        }

    def _validate(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        to = str(body.get("to") or "")
        if not to:
            return graph_error(400, 131008, "Required parameter is missing", "to is required")
        if not _DIGITS.match(to):
            return graph_error(400, 131009, "Parameter value is not valid", "to must be a phone number in digits")
        kind = body.get("type", "text")
        if kind not in _TYPES:
            return graph_error(400, 131051, "Unsupported message type")
        if to in self.state.not_on_whatsapp:
            return graph_error(400, 131026, "Message undeliverable")
        if kind == "text":
            text = body.get("text")
            if not isinstance(text, dict) or not str(text.get("body") or "").strip():
                return graph_error(400, 131008, "Required parameter is missing", "text.body is required")
            if self.state.open_windows is not None and to not in self.state.open_windows:
                return graph_error(
                    400,
                    131047,
                    "Re-engagement message",
                    "Message failed to send because more than 24 hours have passed since the customer last "
                    "replied to this number.",
                )
        if kind == "template":
            return self._validate_template(body.get("template"))
        return None

    def _validate_template(self, template: Any) -> tuple[int, dict[str, Any]] | None:
        if not isinstance(template, dict) or not template.get("name"):
            return graph_error(400, 131008, "Required parameter is missing", "template.name is required")
        language = (template.get("language") or {}).get("code")
        if not language:
            return graph_error(400, 131008, "Required parameter is missing", "template.language.code is required")
        approved = self.state.templates.get(str(template["name"]), {}).get(language)
        if approved is None:
            return graph_error(
                404,
                132001,
                "Template name does not exist in the translation",
                f"template name ({template['name']}) does not exist in {language}",
            )
        components = [c for c in template.get("components") or [] if isinstance(c, dict)]
        body = [p for c in components if c.get("type") == "body" for p in c.get("parameters") or []]
        if len(body) != approved.body:
            return _count_mismatch("body", len(body), approved.body)
        # Graph takes the index as a string or a number; one it cannot read matches no button.
        buttons = {str(c.get("index")): c for c in components if c.get("type") == "button"}
        problem = _validate_buttons(approved, buttons)
        if problem is None and approved.category == "authentication":
            problem = _validate_code(body, buttons)
        return problem


def _count_mismatch(where: str, given: int, expected: int) -> tuple[int, dict[str, Any]]:
    return graph_error(
        400,
        132000,
        "Number of parameters does not match the expected number of params",
        f"{where}: number of localizable_params ({given}) does not match the expected number of params ({expected})",
    )


def _invalid(details: str) -> tuple[int, dict[str, Any]]:
    return graph_error(400, 131009, "Parameter value is not valid", details)


def _validate_buttons(
    approved: ApprovedTemplate, given: dict[str, dict[str, Any]]
) -> tuple[int, dict[str, Any]] | None:
    for index, sub_type in sorted(approved.buttons.items()):
        component = given.get(str(index))
        params = (component or {}).get("parameters") or []
        if component is None or not params:
            return graph_error(
                400, 131008, "Required parameter is missing", f"buttons: the {sub_type} button at {index} needs one"
            )
        if component.get("sub_type") != sub_type:
            return _invalid(f"buttons: the button at index {index} is a {sub_type} button")
        if len(params) != 1:
            return _count_mismatch(f"button at index {index}", len(params), 1)
        kind = _BUTTON_PARAMETER.get(sub_type, "text")
        if not isinstance(params[0], dict) or params[0].get("type") != kind or not params[0].get(kind):
            return _invalid(f"buttons: the button at index {index} takes one {kind} parameter")
    declared = {str(i) for i in approved.buttons}
    for index, component in given.items():
        if index not in declared and component.get("parameters"):
            return _count_mismatch(f"button at index {index}", len(component["parameters"]), 0)
    return None


def _validate_code(body: list[Any], buttons: dict[str, dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
    """An authentication template: one code, short enough, and the same on the copy-code button."""
    code = str(body[0].get("text") or "") if body and isinstance(body[0], dict) else ""
    if not code or len(code) > MAX_CODE_LENGTH:
        return _invalid(f"body: the code must be 1 to {MAX_CODE_LENGTH} characters")
    copied = ((buttons.get("0") or {}).get("parameters") or [{}])[0]
    if not isinstance(copied, dict) or copied.get("text") != code:
        return _invalid("buttons: the copy-code button must carry the body's code")
    return None


def env_for(base_url: str, *, state: MetaState | None = None) -> dict[str, str]:
    """The settings that point the Meta driver, and the webhook's verification, at an emulator."""
    s = state or MetaState()
    return {
        "HERALD_META_TOKEN": s.token,
        "HERALD_META_PHONE_NUMBER_ID": s.phone_number_id,
        "HERALD_META_BASE_URL": base_url,
        "HERALD_META_APP_SECRET": s.app_secret,
        "HERALD_META_VERIFY_TOKEN": VERIFY_TOKEN,
    }


def meta_signature(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` of a webhook POST of ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def status_payload(phone_number_id: str, status: dict[str, Any]) -> dict[str, Any]:
    """One status in the envelope Meta posts."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": phone_number_id},
        "statuses": [status],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }


class MetaEmulator(Emulator):
    """The WhatsApp Cloud API over HTTP, and the status webhooks it posts."""

    name = "meta"

    def __init__(self, state: MetaState | None = None, *, webhook_url: str | None = None) -> None:
        super().__init__()
        self.api = MetaApi(state)
        self.webhook_url = webhook_url

    def handle(self, request: Exchange) -> Answer:
        if request.method == "GET":
            fields = dict(urllib.parse.parse_qsl(request.query)).get("fields")
            return json_answer(*self.api.phone_number(request.path, request.headers.get("authorization"), fields))
        if request.method != "POST":
            return json_answer(*graph_error(400, 100, f"Unsupported {request.method.lower()} request."))
        try:
            payload = json.loads(request.body or b"null")
        except ValueError:
            payload = None
        status, doc = self.api.send(request.path, request.headers.get("authorization"), payload)
        if status == 200 and self.webhook_url:
            self._report(payload, str(doc["messages"][0]["id"]))
        return json_answer(status, doc)

    def _report(self, payload: dict[str, Any], wamid: str) -> None:
        to = str(payload["to"])
        now = int(time.time())
        common: dict[str, Any] = {"id": wamid, "recipient_id": to}
        if payload.get("biz_opaque_callback_data"):
            common["biz_opaque_callback_data"] = payload["biz_opaque_callback_data"]
        pricing = {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}
        steps = [{**common, "status": "sent", "timestamp": str(now), "pricing": pricing}]
        code = self.api.state.fail.get(to)
        if code is None:
            steps.append({**common, "status": "delivered", "timestamp": str(now + 1), "pricing": pricing})
        else:
            error = {
                "code": code,
                "title": "Message failed",
                "message": "Message failed",
                "error_data": {"details": f"emulated failure {code}"},
            }
            steps.append({**common, "status": "failed", "timestamp": str(now + 1), "errors": [error]})
        self.notifier.post(*(self.signed(status_payload(self.api.state.phone_number_id, s)) for s in steps))

    def signed(self, doc: dict[str, Any]) -> Callback:
        """A webhook POST of ``doc`` as Meta signs it."""
        assert self.webhook_url is not None
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "facebookexternalua",
            "x-hub-signature-256": meta_signature(self.api.state.app_secret, body),
        }
        return Callback(self.webhook_url, body, headers)

    def reset_state(self) -> None:
        self.api.state.open_windows = None
        self.api.state.not_on_whatsapp.clear()
        self.api.state.fail.clear()
        self.api.state.can_send_message = "AVAILABLE"
        self.api.state.quality_rating = "GREEN"

    def control(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Body: ``open_windows`` (digits, or null: all open), ``not_on_whatsapp`` (digits), ``templates``
        (``{name: {language: body parameter count, or {"body", "buttons": [{"sub_type"}], "category"}}}``),
        ``fail`` (``{digits: error code}``: the status webhook after the send says failed), ``webhook_url``,
        ``reply`` (``{"from": digits, "text": "STOP"}``: a recipient's message, posted signed to the webhook),
        ``can_send_message`` (the number's messaging health), ``quality_rating``."""
        state = self.api.state
        state.can_send_message = str(doc.get("can_send_message", state.can_send_message)).upper()
        state.quality_rating = str(doc.get("quality_rating", state.quality_rating)).upper()
        if "webhook_url" in doc:
            self.webhook_url = doc["webhook_url"]
        reply = doc.get("reply")
        if reply and self.webhook_url:
            message = {
                "from": str(reply["from"]).lstrip("+"),
                "id": f"wamid.{uuid.uuid4().hex}",
                "timestamp": str(int(time.time())),
                "type": "text",
                "text": {"body": str(reply.get("text", ""))},
            }
            value = {
                "messaging_product": "whatsapp",
                "metadata": {"phone_number_id": state.phone_number_id},
                "contacts": [{"wa_id": message["from"]}],
                "messages": [message],
            }
            change = {"field": "messages", "value": value}
            self.notifier.post(self.signed({"object": "whatsapp_business_account", "entry": [{"changes": [change]}]}))
        state.fail.update({str(k): int(v) for k, v in (doc.get("fail") or {}).items()})
        if "open_windows" in doc:
            state.open_windows = None if doc["open_windows"] is None else set(doc["open_windows"])
        state.not_on_whatsapp.update(doc.get("not_on_whatsapp", []))
        for name, languages in doc.get("templates", {}).items():
            approved = {lang: ApprovedTemplate.from_doc(shape) for lang, shape in languages.items()}
            state.templates[name] = {**state.templates.get(name, {}), **approved}
        return {"templates": sorted(state.templates)}


def start_meta(
    state: MetaState | None = None, *, webhook_url: str | None = None
) -> tuple[RunningEmulator, dict[str, str]]:
    """Start the Meta emulator (posting status webhooks to ``webhook_url``, if given); returns it and the
    settings that point the driver and the webhook's verification at it."""
    running = RunningEmulator(MetaEmulator(state, webhook_url=webhook_url))
    return running, env_for(running.url, state=state)
