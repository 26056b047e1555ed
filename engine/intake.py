"""Admission of one notification: validate, resolve and pin the template, idempotency, store.

Postgres decides idempotency (one statement stores key, message, outbox row and first event, shared with
the accepts that arrive meanwhile: see Repository.accept). Redis, when configured, answers replays and
in-flight duplicates before Postgres is asked; when Redis fails the request still goes through on
Postgres alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from engine.auth import Principal
from engine.channels import Channel, Priority
from engine.dispatch import utcnow
from engine.governance.admission import Admitted, GovernanceAdmission
from engine.governance.budgets import BUDGET_EXHAUSTED, PriceQuery
from engine.handoff import Handoff
from engine.idempotency import (
    CacheUnavailable,
    IdempotencyCache,
    KeyProblem,
    StoredResponse,
    Verdict,
    decode_cached,
    judge,
    pick_key,
    request_hash,
)
from engine.ids import format_message_id, new_id
from engine.metrics import MetricsBuffer
from engine.models import ALLOW_PRIVATE_CALLBACKS, FieldError, NewMessage, NotificationRequest, Tenant, address_errors
from engine.problems import ApiProblem, from_pydantic
from engine.routing import allow_list, destination, email_region
from engine.routing.table import tenant_routing_key
from engine.states import Status
from engine.storage.repository import Repository
from engine.templating import ResolvedTemplate, TemplateCatalog, TemplateError
from engine.tenant_templates import TenantTemplateCache

log = logging.getLogger(__name__)

DEFAULT_LOCALE = "en"
#: How long a process trusts its copy of a tenant row before it reads the row's versions again.
TENANT_TTL_S = 2.0

_KEY_MESSAGES = {
    KeyProblem.MISSING: "an idempotency key is required (Idempotency-Key header or idempotency_key field)",
    KeyProblem.MISMATCH: "the Idempotency-Key header and the idempotency_key field differ",
    KeyProblem.TOO_LONG: "the idempotency key must be 1 to 255 characters",
}


#: Template resolutions by (template ref, locale, channel): the pinned template, or why it cannot be used.
Resolutions = dict[tuple[str, str, Channel], "ResolvedTemplate | FieldError"]


@dataclass(frozen=True, slots=True)
class Checked:
    """A valid notification request with its tenant and resolved template (not stored)."""

    request: NotificationRequest
    tenant: Tenant
    resolved: ResolvedTemplate
    key: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)  #: ``RateLimit-Policy`` / ``RateLimit``


class Intake:
    def __init__(
        self,
        repo: Repository,
        catalog: TemplateCatalog,
        *,
        metrics: MetricsBuffer,
        idempotency_ttl_s: int,
        cache: IdempotencyCache | None = None,
        channels: frozenset[Channel] = frozenset(Channel),
        tenant_templates: TenantTemplateCache | None = None,
        clock: Callable[[], datetime] = utcnow,
        allow_private_callbacks: bool = False,
        tenant_ttl_s: float = TENANT_TTL_S,
        governance: GovernanceAdmission | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        self.repo = repo
        self.catalog = catalog
        self.metrics = metrics
        self.idempotency_ttl_s = idempotency_ttl_s
        self.cache = cache
        self.channels = channels  #: channels with at least one configured provider
        self.clock = clock
        self.tenant_templates = tenant_templates
        self.allow_private_callbacks = allow_private_callbacks  #: HERALD_WEBHOOKS_ALLOW_PRIVATE
        self.tenant_ttl_s = tenant_ttl_s
        #: Quotas and budgets, decided in memory (None: nothing is limited at admission).
        self.governance = governance
        #: Publishes due one-time codes straight after their accept (None: the relay publishes everything).
        self.handoff = handoff
        self._tenants: dict[str, tuple[float, Tenant]] = {}
        #: (tenant, config version, channel) -> what of its config prices a message: allow-list, overrides
        self._pricing: dict[tuple[str, int, Channel], tuple[tuple[str, ...] | None, str]] = {}

    async def tenant(self, slug: str) -> Tenant | None:
        """The tenant, re-read after ``tenant_ttl_s``: a config change or a template publish made by any
        process shows up within it. Its config and templates are reloaded only when their versions moved."""
        now = time.monotonic()
        cached = self._tenants.get(slug)
        if cached is not None and now - cached[0] < self.tenant_ttl_s:
            return cached[1]
        tenant = await self.repo.get_tenant(slug)
        if tenant is not None:
            self._tenants[slug] = (now, tenant)
            if self.tenant_templates is not None:
                await self.tenant_templates.ensure(tenant.slug, tenant.id, tenant.templates_version)
        return tenant

    def _stale(self, slug: str, after_s: float = 0.25) -> bool:
        """Whether the cached tenant was read more than ``after_s`` ago (worth reading again once)."""
        cached = self._tenants.get(slug)
        return cached is not None and time.monotonic() - cached[0] > after_s

    def forget_tenant(self, slug: str) -> None:
        """Re-read the tenant on its next request (after this process changed its config or templates)."""
        self._tenants.pop(slug, None)

    async def check(self, principal: Principal, body: NotificationRequest | Any) -> Checked:
        """Validate a notification as :meth:`submit` would, without storing it (no idempotency key needed):
        a validated request (the API edge parsed it) or a raw JSON body.

        Raises:
            ApiProblem: 401/403/422 with the fields at fault.
        """
        return await self._check(principal, body, None, need_key=False)

    async def _check(
        self, principal: Principal, body: NotificationRequest | Any, header_key: str | None, *, need_key: bool
    ) -> Checked:
        request = body if isinstance(body, NotificationRequest) else self.parse(body)
        check_tenant_id(request.tenant_id, principal.tenant)
        tenant = await self.tenant(principal.tenant)
        if tenant is None:
            raise ApiProblem(401, f"unknown tenant {principal.tenant!r}")
        checked, errors = self.validate(request, tenant, header_key, need_key=need_key)
        if checked is None and self._stale(tenant.slug):  # a publish on another replica may be newer
            self.forget_tenant(tenant.slug)
            tenant = await self.tenant(principal.tenant) or tenant
            checked, errors = self.validate(request, tenant, header_key, need_key=need_key)
        if checked is None:
            raise ApiProblem(422, "the notification is not valid", errors=errors)
        return checked

    def validate(
        self,
        request: NotificationRequest,
        tenant: Tenant,
        header_key: str | None,
        *,
        need_key: bool,
        memo: Resolutions | None = None,
    ) -> tuple[Checked | None, list[FieldError]]:
        """The checks past the model's own (key, channel, address, template and its variables), without
        I/O: the checked request, or None and the fields at fault (located under ``body``). ``memo`` keeps
        template resolutions across the calls of one batch (one tenant, one moment)."""
        key, problem = pick_key(header_key, request.idempotency_key)
        errors = [FieldError(("header", "Idempotency-Key"), _KEY_MESSAGES[problem])] if problem and need_key else []
        if request.channel not in self.channels:
            errors.append(FieldError(("body", "channel"), f"no {request.channel.value} provider is configured"))
        errors += address_errors(request)
        errors += attachment_errors(request, tenant)
        resolved, template_errors = self._resolve(request, tenant, memo)
        errors += template_errors
        if errors or resolved is None:
            return None, errors
        return Checked(request, tenant, resolved, key), []

    async def submit(self, principal: Principal, body: NotificationRequest | Any, header_key: str | None) -> Accepted:
        """Accept one notification: a validated request (the API edge parsed it) or a raw JSON body.

        Raises:
            ApiProblem: 401/403/409/422 with the fields at fault.
        """
        checked = await self._check(principal, body, header_key, need_key=True)
        request, tenant, resolved, key = checked.request, checked.tenant, checked.resolved, checked.key
        assert key is not None
        req_hash = canonical_hash(request, tenant)
        replay = await self._cache_first(tenant, key, req_hash)
        if replay is not None:
            return replay
        admitted: Admitted | None = None
        try:
            try:
                admitted = self.admit(request, tenant, resolved)
            except ApiProblem as refused:
                if refused.status != 429:
                    raise
                # At the cap, a key already used still answers its replay (one read, on refusals only).
                earlier = await self.repo.idempotent_response(tenant.id, key)
                if earlier is None:
                    raise
                return self._judge(earlier, req_hash)
            result = await self._store(request, tenant, resolved, key, req_hash, admitted, test=principal.test)
        except BaseException:  # a refusal too: the key stays free for the client's retry
            self.undo(request, tenant, admitted)
            await self._cache_release(tenant, key)
            raise
        if result.replayed:  # the key was used already: an idempotent replay counts nothing
            self.undo(request, tenant, admitted)
            return result
        if admitted is None:
            return result
        # built, not dataclasses.replace(), which costs more than the headers themselves
        return Accepted(result.status_code, result.body, result.replayed, admitted.headers())

    # -- steps -------------------------------------------------------------------------------------

    def admit(self, request: NotificationRequest, tenant: Tenant, resolved: ResolvedTemplate) -> Admitted | None:
        """Count the message against its channel's quotas and budget (None: no governance).

        Raises: ApiProblem 429."""
        if self.governance is None:
            return None
        to = {"phone": request.to.phone}  # all a destination is told by (a dump of every field costs more)
        allow, overrides = self._pricing_of(tenant, request.channel)
        query = PriceQuery(
            tenant.slug,
            request.channel,
            request.metadata.category or resolved.manifest.category,
            destination(request.channel, to, email_region_=email_region(tenant.config, tenant.region)),
            allow=allow,
            overrides=overrides,
        )
        try:
            return self.governance.admit(tenant, request.channel, query)
        except ApiProblem as refused:
            kind = "budget" if refused.type == BUDGET_EXHAUSTED else "quota"
            self.metrics.inc(
                "notifications_refused_total", channel=request.channel.value, tenant=tenant.slug, kind=kind
            )
            raise

    def _pricing_of(self, tenant: Tenant, channel: Channel) -> tuple[tuple[str, ...] | None, str]:
        key = (tenant.slug, tenant.config_version, channel)
        found = self._pricing.get(key)
        if found is None:
            if len(self._pricing) >= 10_000:
                self._pricing = {}
            found = self._pricing[key] = (allow_list(tenant.config, channel), tenant_routing_key(tenant.config))
        return found

    def undo(self, request: NotificationRequest, tenant: Tenant, admitted: Admitted | None) -> None:
        """Take back what :meth:`admit` counted for a message that was not stored after all."""
        if self.governance is not None and admitted is not None:
            self.governance.undo(tenant, request.channel, admitted)

    def parse(self, body: Any) -> NotificationRequest:
        """The request model of a raw JSON value. Raises: ApiProblem 422 naming the fields."""
        if not isinstance(body, dict):
            raise ApiProblem(
                422, "the body must be a JSON object", errors=[FieldError(("body",), "expected an object")]
            )
        try:
            return NotificationRequest.model_validate(
                body, context={ALLOW_PRIVATE_CALLBACKS: self.allow_private_callbacks}
            )
        except ValidationError as err:
            raise ApiProblem(
                422, "the notification is not valid", errors=from_pydantic(err.errors(include_url=False))
            ) from None

    def _resolve(
        self, request: NotificationRequest, tenant: Tenant, memo: Resolutions | None = None
    ) -> tuple[ResolvedTemplate | None, list[FieldError]]:
        locale = request.locale or tenant.default_locale or DEFAULT_LOCALE
        memo_key = (request.template_id, locale, request.channel)
        found = memo.get(memo_key) if memo is not None else None
        if found is None:
            try:
                found = self.catalog.resolve(
                    request.template_id,
                    locale=locale,
                    channel=request.channel,
                    tenant=tenant.slug,
                    tenant_default_locale=tenant.default_locale,
                )
            except TemplateError as err:
                found = FieldError(("body", err.field), str(err))
            if memo is not None:
                memo[memo_key] = found
        if isinstance(found, FieldError):
            return None, [found]
        resolved = found
        problems = self.catalog.validate_variables(resolved, request.variables)
        return resolved, [FieldError(("body", "variables", p.name), p.message) for p in problems]

    async def _cache_first(self, tenant: Tenant, key: str, req_hash: str) -> Accepted | None:
        if self.cache is None:
            return None
        try:
            owned, value = await self.cache.claim(tenant.slug, key, req_hash, self.idempotency_ttl_s)
        except CacheUnavailable as err:
            log.warning("idempotency cache unavailable, using Postgres only: %s", err)
            return None
        if owned or value is None:
            return None
        in_flight, stored, flight_hash = decode_cached(value)
        if in_flight is Verdict.IN_FLIGHT:
            if flight_hash != req_hash:
                raise _key_reused()
            raise ApiProblem(409, "a request with this idempotency key is still being processed; retry shortly")
        return self._judge(stored, req_hash)

    async def _store(
        self,
        request: NotificationRequest,
        tenant: Tenant,
        resolved: ResolvedTemplate,
        key: str,
        req_hash: str,
        admitted: Admitted | None = None,
        *,
        test: bool = False,
    ) -> Accepted:
        message, status, response = self.new_message(
            Checked(request, tenant, resolved, key),
            req_hash,
            estimated_cost=admitted.estimate if admitted else None,
            test=test,
        )
        handoff = self.handoff if status is Status.QUEUED and message.priority is Priority.HIGH else None
        accepted = await self.repo.accept(
            message,
            response,
            status=status,
            idempotency_ttl_s=self.idempotency_ttl_s,
            hold_s=handoff.hold_s if handoff else 0.0,
        )
        stored = accepted.original
        if accepted.outbox is not None:
            if handoff is not None:
                handoff.offer(accepted.outbox)
            stored = StoredResponse(req_hash, 202, response)
            self.metrics.inc("notifications_enqueued_total", channel=request.channel.value, tenant=tenant.slug)
            result = Accepted(202, response)
        else:
            result = self._judge(stored, req_hash)
        await self._cache_complete(tenant, key, stored)
        return result

    def new_message(
        self,
        checked: Checked,
        req_hash: str,
        dumped: dict[str, Any] | None = None,
        *,
        estimated_cost: Decimal | None = None,
        test: bool = False,
    ) -> tuple[NewMessage, Status, dict[str, Any]]:
        """The message to store for a checked request (with a key), its first status and the answer.
        ``dumped``: the request's :func:`canonical_dump` when the caller has it (saves dumping it again);
        ``test``: sent with a test-mode API key."""
        request, tenant, resolved, key = checked.request, checked.tenant, checked.resolved, checked.key
        assert key is not None
        now = self.clock()
        schedule_at = request.schedule_at
        scheduled = schedule_at is not None and schedule_at > now
        status = Status.SCHEDULED if scheduled else Status.QUEUED
        ttl_from = schedule_at if scheduled and schedule_at is not None else now
        message_id = new_id()
        response = {
            "message_id": format_message_id(message_id),
            "status": status.value,
            "locale": resolved.locale_used,
            "template": f"{resolved.id}:v{resolved.version}",
        }
        message = NewMessage(
            id=message_id,
            tenant=tenant,
            channel=request.channel,
            template_id=resolved.id,
            template_version=resolved.version,
            locale=resolved.locale_used,
            requested_locale=request.locale,
            to=dumped["to"] if dumped else request.to.model_dump(mode="json", exclude_none=True),
            variables=request.variables,
            metadata=_pinned_metadata(request, resolved, dumped.get("metadata") if dumped else None, test=test),
            priority=request.priority,
            schedule_at=schedule_at if scheduled else None,
            ttl_seconds=request.ttl_seconds,
            expires_at=ttl_from + timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None,
            idempotency_key=key,
            request_hash=req_hash,
            callback_url=str(request.callback_url) if request.callback_url else None,
            trace_id=request.trace_id,
            attachments=tuple(request.attachments),
            category=request.metadata.category or resolved.manifest.category,
            tags=tuple(request.metadata.tags),
            estimated_cost=estimated_cost,
        )
        return message, status, response

    @staticmethod
    def _judge(stored: StoredResponse | None, req_hash: str) -> Accepted:
        verdict = judge(stored, req_hash)
        if verdict is Verdict.CONFLICT:
            raise _key_reused()
        if stored is None:  # the key expired between the insert and the read: ask the client to retry
            raise ApiProblem(409, "the idempotency key changed state; retry the request")
        return Accepted(stored.status_code, stored.body, replayed=True)

    async def _cache_complete(self, tenant: Tenant, key: str, stored: StoredResponse | None) -> None:
        if self.cache is None or stored is None:
            return
        try:
            await self.cache.complete(tenant.slug, key, stored, self.idempotency_ttl_s)
        except CacheUnavailable as err:
            log.warning("idempotency cache write failed: %s", err)

    async def _cache_release(self, tenant: Tenant, key: str) -> None:
        if self.cache is None:
            return
        try:
            await self.cache.release(tenant.slug, key)
        except CacheUnavailable as err:
            log.warning("idempotency cache release failed: %s", err)


def canonical_dump(request: NotificationRequest, tenant: Tenant) -> dict[str, Any]:
    """The validated body as JSON values, its tenant named: what idempotency compares."""
    canonical = request.model_dump(mode="json", exclude_none=True)
    canonical["tenant_id"] = tenant.slug
    return canonical


def canonical_hash(request: NotificationRequest, tenant: Tenant) -> str:
    """What "the same request" means for idempotency: the hash of :func:`canonical_dump`."""
    return request_hash(canonical_dump(request, tenant))


#: The metadata key marking a message sent with a test-mode API key.
TEST_MODE = "test_mode"


def check_tenant_id(tenant_id: str | None, token_tenant: str) -> None:
    """A body may name its tenant; it must be the token's.

    Raises:
        ApiProblem: 403 naming ``tenant_id``.
    """
    if tenant_id is not None and tenant_id != token_tenant:
        raise ApiProblem(
            403,
            "tenant_id does not match the token's tenant",
            errors=[FieldError(("body", "tenant_id"), "must be the token's tenant")],
        )


def _pinned_metadata(
    request: NotificationRequest, resolved: ResolvedTemplate, dumped: dict[str, Any] | None = None, *, test: bool
) -> dict[str, Any]:
    """The request's metadata with its category pinned: the request's own, else the template's, so the
    suppression check and unsubscribe links know the category without reading the manifest again; and
    ``test_mode`` when a test-mode API key sent it (only the key sets it: the senders send those to the
    sink)."""
    metadata = dict(dumped) if dumped is not None else request.metadata.model_dump(mode="json", exclude_none=True)
    metadata.setdefault("category", resolved.manifest.category)
    metadata.pop(TEST_MODE, None)
    if test:
        metadata[TEST_MODE] = True
    return metadata


def attachment_errors(request: NotificationRequest, tenant: Tenant) -> list[FieldError]:
    """Attachments outside the tenant's ``attachments.buckets``."""
    allowed = tenant.config.attachments
    return [
        FieldError(("body", "attachments", i, "s3"), "not in one of the tenant's attachments.buckets")
        for i, a in enumerate(request.attachments)
        if not allowed.allows(a.s3)
    ]


def _key_reused() -> ApiProblem:
    return ApiProblem(
        422,
        "this idempotency key was already used with a different request",
        errors=[FieldError(("header", "Idempotency-Key"), "already used with a different request body")],
    )
