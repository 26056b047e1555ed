"""HTTP routes, one router per resource, mounted on the app the Serve ingress serves.

Adding a route or a resource
----------------------------
1. Models: the request and response bodies as pydantic models in ``serve_app/schemas/<resource>.py``
   (or the engine's own request model, as ``NotificationRequest``).
2. Router: ``serve_app/routes/<resource>.py`` with ``router = APIRouter(tags=["<resource>"])`` and one
   function per route. It names its caller with a dependency from :mod:`serve_app.routes.deps`
   (``Platform``, ``TenantAdmin``, ``Sender``...), which checks the token and scope and documents the
   operation's security; it reaches engine services through ``State``; it declares
   ``response_model=`` and ``responses=problems(...)`` for the problem+json answers it can give. No
   SQL here: storage is behind engine services and the repository. For example::

       router = APIRouter(tags=["tenants"])

       @router.get("/admin/tenants/{slug}", response_model=TenantDocument, responses=problems(401, 403, 404))
       async def get_tenant(slug: str, _: Platform, state: State) -> TenantDocument:
           return TenantDocument.model_validate(await state.tenants.get(slug))

       @router.get("/api/tenant", response_model=TenantDocument, responses=problems(401, 403))
       async def get_own_tenant(caller: TenantAdmin, state: State) -> TenantDocument:
           return TenantDocument.model_validate(await state.tenants.get(caller.tenant.slug))

3. Mount it: add the module's ``router`` to :data:`ROUTERS`. A new engine service the routes need
   becomes a field of :class:`~serve_app.routes.deps.ApiState`, built in ``HeraldApi.__init__``.
4. Test it through the session's stack (``tests/e2e``, the ``herald`` fixture); the OpenAPI checks and
   the schema-driven fuzz test pick the new operation up by themselves.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from serve_app.http import create_app
from serve_app.routes import (
    admin,
    analytics,
    audit,
    batches,
    dlq,
    inbox,
    ingress,
    keys,
    links,
    metrics,
    notifications,
    partials,
    preview,
    provider_webhooks,
    recipients,
    routing,
    templates,
    tenants,
    unsubscribe,
    usage,
    webhook_endpoints,
)
from serve_app.routes.deps import ApiState

ROUTERS: tuple[APIRouter, ...] = (
    notifications.router,
    batches.router,
    ingress.router,
    templates.router,
    partials.router,
    preview.router,
    routing.router,
    links.router,
    unsubscribe.router,
    inbox.router,
    admin.router,
    dlq.router,
    tenants.router,
    provider_webhooks.router,
    webhook_endpoints.router,
    analytics.router,
    keys.router,
    audit.router,
    recipients.router,
    metrics.router,
    usage.router,
)


def build_app(state: ApiState | None = None) -> FastAPI:
    """The API with every router mounted; ``state`` is what the routes reach (None: documents only)."""
    app = create_app()
    for router in ROUTERS:
        app.include_router(router)
    if state is not None:
        app.state.herald = state
    return app
