"""``/webhooks/...``: what providers report after a send (deliveries, bounces, complaints, reads).

Each route reads the raw body and hands it, untouched, to the engine's
:class:`~engine.feedback.inbound.ProviderWebhooks`, which verifies it by the provider's own scheme before
anything is recorded. The URL Twilio signs is ``HERALD_PUBLIC_URL`` + path + query, never the address a
proxy in front of Herald forwarded to. ``?tenant=<slug>`` verifies with that tenant's own provider
credentials (see that module).
"""

from __future__ import annotations

from dataclasses import asdict
from enum import StrEnum
from typing import Annotated, Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from engine.channels import Channel
from engine.feedback.events import WebhookRequest
from engine.feedback.schemas import IngestOut
from engine.tenant_service import SLUG_PATTERN
from serve_app.routes.deps import State
from serve_app.schemas import webhooks as docs
from serve_app.schemas.problems import problems

router = APIRouter(tags=["provider webhooks"])


class EmailProvider(StrEnum):
    SES = "ses"
    SENDGRID = "sendgrid"


class WhatsappProvider(StrEnum):
    TWILIO = "twilio"
    META = "meta"


TenantQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=SLUG_PATTERN,
        description="verify with this tenant's own provider credentials; its events match only its messages",
    ),
]
MessageQuery = Annotated[
    str | None,
    Query(max_length=64, description="Herald's message id, on the status callback URL Herald gave Twilio"),
]

#: What every provider webhook may answer besides 200.
ANSWERS = problems(400, 401, 403, 413, 422, 502, 503)


def _extra(body: dict[str, Any], *schemes: str) -> dict[str, Any]:
    return {"requestBody": body, "security": [{s: []} for s in schemes]}


async def inbound(request: Request, state: State) -> WebhookRequest:
    """The request as the provider sent it, with the URL it was given."""
    query = request.url.query
    return WebhookRequest(
        body=await request.body(),
        headers=request.headers,
        url=state.public_url + request.url.path + (f"?{query}" if query else ""),
        query=dict(request.query_params),
    )


def _out(report: Any) -> IngestOut:
    return IngestOut.model_validate(asdict(report))


@router.post(
    "/webhooks/email/{provider}",
    response_model=IngestOut,
    responses=ANSWERS,
    openapi_extra=_extra(docs.EMAIL_BODY, docs.SENDGRID, docs.SNS),
)
async def email_webhook(
    provider: EmailProvider, request: Request, state: State, tenant: TenantQuery = None
) -> IngestOut:
    """SendGrid's signed Event Webhook (a batch of events), or SES events through an SNS subscription
    (its SubscriptionConfirmation is confirmed here)."""
    return _out(await state.webhooks.receive(Channel.EMAIL, provider.value, await inbound(request, state)))


@router.post(
    "/webhooks/sms/twilio",
    response_model=IngestOut,
    responses=ANSWERS,
    openapi_extra=_extra(docs.TWILIO_BODY, docs.TWILIO),
)
async def sms_twilio_webhook(
    request: Request, state: State, tenant: TenantQuery = None, herald_message_id: MessageQuery = None
) -> IngestOut:
    """Twilio's SMS status callbacks (the ``StatusCallback`` Herald sets on every send)."""
    return _out(await state.webhooks.receive(Channel.SMS, "twilio", await inbound(request, state)))


_TWIML = {
    200: {
        "description": "TwiML: the tenant's help text as a reply to HELP, else an empty response",
        "content": {"application/xml": {"schema": {"type": "string"}}},
    }
}


@router.post(
    "/webhooks/sms/twilio/inbound",
    response_class=Response,
    responses={**_TWIML, **ANSWERS},
    openapi_extra=_extra(docs.TWILIO_BODY, docs.TWILIO),
)
async def sms_twilio_inbound(request: Request, state: State, tenant: TenantQuery = None) -> Response:
    """Twilio's incoming-message webhook (the number's "A message comes in"; WhatsApp senders too):
    STOP / UNSUBSCRIBE suppress the number for the tenant's non-required categories, START lifts that,
    HELP is answered with the tenant's help text."""
    report = await state.webhooks.receive_inbound(Channel.SMS, "twilio", await inbound(request, state))
    reply = f"<Message>{escape(report.help)}</Message>" if report.help else ""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response>{reply}</Response>'
    return Response(body, media_type="application/xml")


@router.post(
    "/webhooks/whatsapp/{provider}",
    response_model=IngestOut,
    responses=ANSWERS,
    openapi_extra=_extra(
        docs.request_body(
            *docs.META_BODY["content"].items(),
            *docs.TWILIO_BODY["content"].items(),
            description="Meta: the WhatsApp webhook payload. Twilio: its status callback form.",
        ),
        docs.META,
        docs.TWILIO,
    ),
)
async def whatsapp_webhook(
    provider: WhatsappProvider,
    request: Request,
    state: State,
    tenant: TenantQuery = None,
    herald_message_id: MessageQuery = None,
) -> IngestOut:
    """Meta's WhatsApp webhooks (statuses, and recipients' replies: STOP / START as on SMS), or Twilio's
    WhatsApp status callbacks."""
    return _out(await state.webhooks.receive(Channel.WHATSAPP, provider.value, await inbound(request, state)))


@router.get(
    "/webhooks/whatsapp/meta",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "`hub.challenge`, as sent", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **problems(400, 403, 422, 503),
    },
    openapi_extra={"security": []},
)
async def meta_verification(
    request: Request,
    state: State,
    mode: Annotated[str | None, Query(alias="hub.mode", max_length=32)] = None,
    verify_token: Annotated[str | None, Query(alias="hub.verify_token", max_length=256)] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=256)] = None,
    tenant: TenantQuery = None,
) -> PlainTextResponse:
    """Meta's verification request when the webhook is set up: the challenge back when ``hub.verify_token``
    is ``HERALD_META_VERIFY_TOKEN``, else 403."""
    answer = await state.webhooks.handshake(Channel.WHATSAPP, "meta", await inbound(request, state))
    return PlainTextResponse(answer)
