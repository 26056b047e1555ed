"""What providers post to ``/webhooks/...``, for ``/openapi.json``: the bodies (documented, not parsed
here: each route reads the raw bytes its provider signed) and the signature schemes that authenticate
them, in place of a bearer token."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from serve_app.schemas.problems import REF_PREFIX

SENDGRID = "sendgrid_signature"
SNS = "sns_signature"
TWILIO = "twilio_signature"
META = "meta_signature"

#: ``components.securitySchemes`` of the provider webhooks.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    SENDGRID: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Email-Event-Webhook-Signature",
        "description": "SendGrid's signed Event Webhook: ECDSA P-256 / SHA-256 over the "
        "`X-Twilio-Email-Event-Webhook-Timestamp` header and the raw body, checked with "
        "`HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY` (or the `?tenant=`'s own key); a timestamp more than "
        "`HERALD_WEBHOOK_TOLERANCE_SECONDS` away is a replay (403).",
    },
    SNS: {
        "type": "apiKey",
        "in": "header",
        "name": "x-amz-sns-message-type",
        "description": "Amazon SNS: the message's `Signature` (version 1 SHA1, 2 SHA256), checked against the "
        "certificate at its `SigningCertURL`, fetched only from addresses matching "
        "`HERALD_SES_SNS_CERT_URL_PATTERN` (AWS's by default); `Timestamp` within the tolerance window.",
    },
    TWILIO: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Signature",
        "description": "HMAC-SHA1 under `HERALD_TWILIO_AUTH_TOKEN` (or the `?tenant=`'s own) over "
        "`HERALD_PUBLIC_URL` + path + query and the sorted form parameters.",
    },
    META: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Hub-Signature-256",
        "description": "`sha256=` + HMAC-SHA256 of the raw body under `HERALD_META_APP_SECRET`.",
    },
}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class SendgridEvent(_Open):
    """One event of a SendGrid Event Webhook batch (the body is a JSON array of them); ``message_id``
    and ``tenant`` are Herald's ``custom_args``, echoed."""

    event: str = Field(examples=["delivered"])
    email: str | None = None
    timestamp: int | None = None
    sg_event_id: str | None = None
    sg_message_id: str | None = None
    message_id: str | None = Field(None, examples=["msg_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b"])


class SnsMessage(_Open):
    """An Amazon SNS HTTP(S) delivery; for SES, ``Message`` is the SES event document as text."""

    Type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
    MessageId: str
    TopicArn: str
    Message: str
    Timestamp: str
    SignatureVersion: str = Field(examples=["2"])
    Signature: str
    SigningCertURL: str
    SubscribeURL: str | None = None
    Token: str | None = None


class TwilioStatusCallback(_Open):
    """A Twilio status callback (``application/x-www-form-urlencoded``)."""

    MessageSid: str
    MessageStatus: str = Field(examples=["delivered"])
    AccountSid: str | None = None
    To: str | None = None
    From: str | None = None
    ErrorCode: str | None = None


class MetaWebhook(_Open):
    """A WhatsApp Business Account webhook: ``entry[].changes[].value.statuses[]`` are read."""

    object: str = Field(examples=["whatsapp_business_account"])
    entry: list[dict[str, Any]]


def body_components() -> dict[str, Any]:
    """The component schemas the webhook bodies refer to."""
    models = [SendgridEvent, SnsMessage, TwilioStatusCallback, MetaWebhook]
    _, doc = models_json_schema([(m, "validation") for m in models], ref_template=REF_PREFIX + "{model}")
    return dict(doc.get("$defs", {}))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_PREFIX + name}


def request_body(*content: tuple[str, dict[str, Any]], description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": {t: {"schema": s} for t, s in content}}


EMAIL_BODY = request_body(
    ("application/json", {"oneOf": [{"type": "array", "items": _ref("SendgridEvent")}, _ref("SnsMessage")]}),
    description="SendGrid: a JSON array of events. SES: the SNS message (which SNS posts as text/plain: the raw "
    "body is read whatever its content type).",
)
TWILIO_BODY = request_body(
    ("application/x-www-form-urlencoded", _ref("TwilioStatusCallback")), description="Twilio's form parameters"
)
META_BODY = request_body(("application/json", _ref("MetaWebhook")), description="The WhatsApp webhook payload")
