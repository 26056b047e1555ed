"""What every router shares: the API's typed state, and the caller (principal, tenant and scope).

Routes name their caller with one of the annotated dependencies below; each also puts the bearer
scheme and its scope into the operation's ``security`` in ``/openapi.json``:

- ``Sender`` / ``Reader`` / ``TemplateAuthor`` / ``TenantAdmin``: a tenant principal with that scope
  (``admin`` includes the others), resolved to its tenant row;
- ``Platform``: the platform operator (``herald token --platform``); a tenant token is 403;
- ``AdminOrPlatform``: either a tenant admin (who gets its own tenant's view) or the platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from engine.auth import ADMIN, PLATFORM, AuthError, PlatformPrincipal, Principal
from engine.batch import BatchIntake
from engine.batch.ingress import IngressKeys
from engine.credentials import TenantCredentials
from engine.feedback.analytics import Analytics
from engine.feedback.endpoints import WebhookEndpoints
from engine.feedback.inbound import ProviderWebhooks
from engine.feedback.signing_keys import WebhookSecrets
from engine.governance.audit import AuditLog
from engine.governance.keys import ApiKeyService, Authenticator
from engine.governance.recipients import RecipientService
from engine.governance.usage import UsageService
from engine.intake import Intake
from engine.lifecycle import Lifecycle, QueuesSnapshot
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.routing.service import RoutingService
from engine.storage.repository import Repository
from engine.template_service import TemplateService
from engine.tenant_service import TenantService
from engine.tracking import Tracking

BEARER = "bearer"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Operations(Protocol):
    """What the routes need of the running cluster (implemented by the Serve deployment)."""

    async def health_checks(self) -> dict[str, str]:
        """Each part's state: ``ok``, or what is wrong."""

    async def queues(self) -> QueuesSnapshot:
        """Each broker queue's depth, rates, oldest age and consumers, and the outbox (the relay's view).
        Raises: ApiProblem 503 when the relay cannot say."""

    async def metrics_text(self) -> str:
        """Prometheus exposition of every process's counters."""

    async def provider_report(self) -> list[dict[str, Any]]:
        """Every known provider: enabled, failover rank, configured or what it misses."""


@dataclass(frozen=True, slots=True)
class ApiState:
    """The components routes reach, built once per replica by the Serve deployment (``app.state.herald``)."""

    secret: str
    intake: Intake
    repo: Repository
    templates: TemplateService
    tracking: Tracking
    credentials: TenantCredentials
    tenants: TenantService
    lifecycle: Lifecycle
    ops: Operations
    webhooks: ProviderWebhooks  #: provider webhooks in
    endpoints: WebhookEndpoints  #: tenants' endpoints for events out
    webhook_secrets: WebhookSecrets
    analytics: Analytics
    public_url: str  #: HERALD_PUBLIC_URL (else where the API listens): the URLs providers were given
    routing: RoutingService
    usage: UsageService  #: GET /api/usage
    batches: BatchIntake  #: POST /api/batch, GET/DELETE /api/batches/{id}
    ingress_keys: IngressKeys  #: the keys that sign producers' messages on the ingress queue
    ingress_queue: str  #: the ingress queue's name on the broker (HERALD_QUEUE_PREFIX in front)
    authenticator: Authenticator  #: JWTs, and API keys from this replica's snapshot
    keys: ApiKeyService
    audit: AuditLog
    recipients: RecipientService


async def api_state(request: Request) -> ApiState:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop per request.
    state: ApiState | None = getattr(request.app.state, "herald", None)
    if state is None:
        raise ApiProblem(503, "Herald is starting")
    return state


State = Annotated[ApiState, Depends(api_state)]

bearer = HTTPBearer(
    scheme_name=BEARER,
    bearerFormat="JWT",
    auto_error=False,
    description=(
        "A JWT from `herald token --tenant SLUG` (claims `tenant`, `scope`: send read templates admin), "
        "a tenant's API key (`hk_live_...` / `hk_test_...` from `POST /api/keys`, with its scopes) "
        "or `herald token --platform` (scope `platform`). Each operation names the scope it needs."
    ),
)


async def authenticated(
    request: Request,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal | PlatformPrincipal:
    """The token's (JWT or API key) principal. Raises: ApiProblem 401."""
    try:
        return await state.authenticator.authenticate(request.headers.get("authorization"))
    except AuthError as err:
        raise ApiProblem(401, str(err), headers=_CHALLENGE) from None


Authenticated = Annotated[Principal | PlatformPrincipal, Depends(authenticated)]


@dataclass(frozen=True, slots=True)
class TenantCaller:
    """A tenant principal and its tenant row: routes act on this tenant only."""

    principal: Principal
    tenant: Tenant

    @property
    def actor(self) -> str:
        """Who audit records name: the tenant, and the API key when one was used."""
        key = self.principal.key_id
        return f"{self.principal.tenant}/{key}" if key else self.principal.tenant


async def tenant_caller(scopes: SecurityScopes, state: State, principal: Authenticated) -> TenantCaller:
    """Raises: ApiProblem 403 (platform token, missing scope), 401 (unknown tenant)."""
    if not isinstance(principal, Principal):
        raise ApiProblem(403, "a platform token acts for no tenant: use a tenant token (herald token --tenant SLUG)")
    for scope in scopes.scopes:
        if not principal.can(scope):
            raise ApiProblem(403, f"the token lacks the '{scope}' scope")
    tenant = await state.intake.tenant(principal.tenant)
    if tenant is None:
        raise ApiProblem(401, f"unknown tenant {principal.tenant!r}", headers=_CHALLENGE)
    return TenantCaller(principal, tenant)


async def platform_caller(principal: Authenticated) -> PlatformPrincipal:
    """Raises: ApiProblem 403 for a tenant token."""
    if not isinstance(principal, PlatformPrincipal):
        raise ApiProblem(403, "this route is for the platform operator (a token from herald token --platform)")
    return principal


async def admin_caller(state: State, principal: Authenticated) -> PlatformPrincipal | TenantCaller:
    """The platform, or a tenant admin (resolved to its tenant)."""
    if isinstance(principal, PlatformPrincipal):
        return principal
    return await tenant_caller(SecurityScopes([ADMIN]), state, principal)


Sender = Annotated[TenantCaller, Security(tenant_caller, scopes=["send"])]
Reader = Annotated[TenantCaller, Security(tenant_caller, scopes=["read"])]
TemplateAuthor = Annotated[TenantCaller, Security(tenant_caller, scopes=["templates"])]
TenantAdmin = Annotated[TenantCaller, Security(tenant_caller, scopes=[ADMIN])]
Platform = Annotated[PlatformPrincipal, Security(platform_caller, scopes=[PLATFORM])]
AdminOrPlatform = Annotated[PlatformPrincipal | TenantCaller, Security(admin_caller, scopes=[ADMIN])]

#: ``openapi_extra`` of routes taking ``AdminOrPlatform``: the platform scope is the other way in.
OR_PLATFORM: dict[str, Any] = {"security": [{BEARER: [PLATFORM]}]}
#: ``openapi_extra`` of routes that need no token.
OPEN: dict[str, Any] = {"security": []}
#: Provider webhooks name their provider's signature scheme instead (serve_app.schemas.webhooks).
