"""Provider webhooks in: pick the verifying receiver, let it verify and parse, record what it verified.

Whose secret verifies a request
-------------------------------
Without ``?tenant=`` a request is verified with Herald's own provider settings (``HERALD_*``) and its
events may match any tenant's messages. With ``?tenant=<slug>`` it is verified with that tenant's own
provider credentials (``PUT /admin/credentials/{channel}/{provider}``: its Twilio auth token, SendGrid
verification key, Meta app secret, SNS topic ARNs) and its events only ever match that tenant's messages;
a tenant without its own credentials for the provider is refused like a bad signature (403). Herald puts
``tenant=`` on the Twilio status callbacks it asks for when sending with a tenant's account (Twilio signs
the URL, query included); SendGrid's, SNS's and Meta's webhook URLs are set once per account, at the
provider, so a tenant with its own account adds ``?tenant=<slug>`` to the URL it configures there.

Answers: a forgery or replay 401/403 with nothing recorded, a body that is not the provider's 400, a
missing setting on our side 503 and a signing certificate we could not fetch 502 (so the provider
retries), storage unavailable 503.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import asyncpg
import httpx

from engine.channels import Channel
from engine.credentials import CredentialBox, sealed_for, without_platform_secrets
from engine.errors import ConfigurationError
from engine.feedback.events import WebhookError, WebhookReceipt, WebhookRequest
from engine.feedback.ingest import FeedbackIngest, IngestReport
from engine.governance.replies import InboundReplies, RepliesReport
from engine.models import Tenant
from engine.problems import ApiProblem

log = logging.getLogger(__name__)

#: The query parameter naming the tenant whose own provider credentials verify a request.
TENANT_QUERY = "tenant"
CONFIRM_TIMEOUT_S = 5.0


class WebhookReceiverPort(Protocol):
    """What the engine needs of a provider's webhook receiver (``drivers.webhooks`` implements it)."""

    async def receive(self, request: WebhookRequest) -> WebhookReceipt: ...

    async def inbound(self, request: WebhookRequest) -> WebhookReceipt: ...

    def handshake(self, request: WebhookRequest) -> str: ...


#: Builds the receiver of ``(channel, provider)`` from provider settings; raises ConfigurationError.
ReceiverFactory = Callable[[Channel, str, Mapping[str, str]], WebhookReceiverPort]
TenantLookup = Callable[[str], Awaitable[Tenant | None]]


async def confirm_subscription(url: str) -> None:
    """GET an SNS ``SubscribeURL`` (already checked against the allowed pattern).

    Raises:
        WebhookError: 502, SNS did not confirm (it sends the confirmation again).
    """
    try:
        async with httpx.AsyncClient(timeout=CONFIRM_TIMEOUT_S, follow_redirects=False, trust_env=False) as client:
            response = await client.get(url)
    except httpx.HTTPError as err:
        raise WebhookError(f"the subscription could not be confirmed ({type(err).__name__})", status_code=502) from None
    if response.status_code != 200:
        raise WebhookError(f"confirming the subscription answered HTTP {response.status_code}", status_code=502)


class ProviderWebhooks:
    """The webhook routes' engine side: one call per request.

    ``env`` is Herald's own provider settings; ``box`` opens tenants' sealed credentials.
    """

    def __init__(
        self,
        ingest: FeedbackIngest,
        factory: ReceiverFactory,
        env: Mapping[str, str],
        *,
        tenants: TenantLookup,
        box: CredentialBox,
        confirm: Callable[[str], Awaitable[None]] = confirm_subscription,
        replies: InboundReplies | None = None,
    ) -> None:
        """``replies``: what acts on recipients' STOP / START / HELP (none: replies are ignored)."""
        self.ingest = ingest
        self.factory = factory
        self.env = dict(env)
        self.tenants = tenants
        self.box = box
        self.confirm = confirm
        self.replies = replies
        self._receivers: dict[tuple[Channel, str, str | None], WebhookReceiverPort] = {}

    async def receive(self, channel: Channel, provider: str, request: WebhookRequest) -> IngestReport:
        """Verify, parse and record one request.

        Raises:
            ApiProblem: what the route answers (see the module docstring).
        """
        receiver, tenant_id = await self._receiver(channel, provider, request)
        try:
            receipt = await receiver.receive(request)
            if receipt.confirm_url:
                await self.confirm(receipt.confirm_url)
                log.info("confirmed the SNS subscription of the %s/%s webhook", channel.value, provider)
        except WebhookError as err:
            raise ApiProblem(err.status_code, err.detail) from None
        try:
            report = await self.ingest.ingest(provider, channel, receipt.events, tenant_id=tenant_id)
            if receipt.inbound and self.replies is not None:  # Meta sends replies beside the statuses
                await self.replies.handle(receipt.inbound, tenant=request.query.get(TENANT_QUERY) or None)
            return report
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("%s/%s webhook events not recorded: %s", channel.value, provider, type(err).__name__)
            raise ApiProblem(503, "the events could not be recorded now; send them again") from None

    async def receive_inbound(self, channel: Channel, provider: str, request: WebhookRequest) -> RepliesReport:
        """Verify an incoming-message webhook and act on the recipients' STOP / START / HELP.

        Raises:
            ApiProblem: as :meth:`receive`.
        """
        receiver, _ = await self._receiver(channel, provider, request)
        try:
            receipt = await receiver.inbound(request)
        except WebhookError as err:
            raise ApiProblem(err.status_code, err.detail) from None
        if self.replies is None:
            return RepliesReport()
        try:
            return await self.replies.handle(receipt.inbound, tenant=request.query.get(TENANT_QUERY) or None)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("%s/%s replies not recorded: %s", channel.value, provider, type(err).__name__)
            raise ApiProblem(503, "the reply could not be recorded now; send it again") from None

    async def handshake(self, channel: Channel, provider: str, request: WebhookRequest) -> str:
        """The answer to a provider's verification GET (Meta's ``hub.challenge``).

        Raises:
            ApiProblem: 403 when the verify token does not match, 503 when none is configured.
        """
        receiver, _ = await self._receiver(channel, provider, request)
        try:
            return receiver.handshake(request)
        except WebhookError as err:
            raise ApiProblem(err.status_code, err.detail) from None

    async def _receiver(
        self, channel: Channel, provider: str, request: WebhookRequest
    ) -> tuple[WebhookReceiverPort, uuid.UUID | None]:
        slug = request.query.get(TENANT_QUERY)
        if not slug:
            return self._built(channel, provider, None, self.env), None
        tenant = await self.tenants(slug)
        sealed = sealed_for(tenant.config, channel, provider) if tenant is not None else None
        if tenant is None or sealed is None:
            raise ApiProblem(403, f"no {channel.value}/{provider} webhook credentials for tenant {slug!r}")
        try:
            overrides = self.box.open(sealed)
        except ConfigurationError as err:
            raise ApiProblem(503, str(err)) from None
        # verified with the tenant's own secret only, never the platform's (engine.credentials)
        return self._built(channel, provider, sealed, {**without_platform_secrets(self.env), **overrides}), tenant.id

    def _built(
        self, channel: Channel, provider: str, sealed: str | None, env: Mapping[str, str]
    ) -> WebhookReceiverPort:
        key = (channel, provider, sealed)
        found = self._receivers.get(key)
        if found is None:
            try:
                found = self.factory(channel, provider, env)
            except ConfigurationError as err:
                raise ApiProblem(503, f"the {channel.value}/{provider} webhook is not configured: {err}") from None
            self._receivers[key] = found
        return found
