"""SendGrid v3 Mail Send emulator.

``POST /v3/mail/send`` is validated as SendGrid does: Bearer auth (401), ``personalizations`` with ``to``
addresses, ``from.email``, ``subject`` (top level or in every personalization), ``content`` (unless
``template_id``), well-formed addresses (400 naming the field); success is ``202`` with an empty body and
an ``X-Message-Id`` header. Faults, recorder and control endpoints: :mod:`drivers.fakes.base`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from typing import Any

from drivers.fakes.base import Answer, Emulator, Exchange, RunningEmulator, json_answer

API_KEY = "SG.emulator-key.emulator-secret-0001"
FROM_EMAIL = "no-reply@herald.local"
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
    """The Mail Send endpoint over HTTP."""

    name = "sendgrid"

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key

    def handle(self, request: Exchange) -> Answer:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return json_answer(404, sg_error("Not found"))
        auth = request.headers.get("authorization", "")
        if not (auth.startswith("Bearer ") and secrets.compare_digest(auth[7:].strip(), self.api_key)):
            return json_answer(401, _UNAUTHORIZED)
        try:
            doc: Any = json.loads(request.body or b"null")
        except ValueError:
            doc = None
        problem = validate(doc)
        if problem is not None:
            return json_answer(400, problem)
        message_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")[:22]
        return 202, {"x-message-id": message_id}, b""


def env_for(base_url: str, api_key: str = API_KEY) -> dict[str, str]:
    """The settings that point the SendGrid driver at an emulator."""
    return {
        "HERALD_SENDGRID_API_KEY": api_key,
        "HERALD_SENDGRID_BASE_URL": base_url,
        "HERALD_SENDGRID_FROM": f"Herald <{FROM_EMAIL}>",
    }


def start_sendgrid(api_key: str = API_KEY) -> tuple[RunningEmulator, dict[str, str]]:
    """Start the SendGrid emulator; returns it and the settings that point the driver at it."""
    running = RunningEmulator(SendgridEmulator(api_key))
    return running, env_for(running.url, api_key)
