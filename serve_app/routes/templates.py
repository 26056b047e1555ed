"""``/api/templates``: a tenant's drafts, published versions and rollbacks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from engine.template_service import DraftRequest, RollbackRequest
from serve_app.routes.deps import State, TemplateAuthor
from serve_app.schemas.problems import problems
from serve_app.schemas.templates import TemplateListing, TemplateVersion

router = APIRouter(tags=["templates"])

TemplateId = Annotated[str, Path(max_length=100, examples=["welcome"], description="a template id, no version")]


@router.put(
    "/api/templates/{template_id}/draft", response_model=TemplateVersion, responses=problems(400, 401, 403, 413, 422)
)
async def save_draft(
    template_id: TemplateId, body: DraftRequest, caller: TemplateAuthor, state: State
) -> TemplateVersion:
    """Create or replace the tenant's draft (compiled in the sandbox first: unsafe or broken ones are 422)."""
    saved = await state.templates.save_draft(caller.tenant, template_id, body, caller.actor)
    return TemplateVersion.model_validate(saved)


@router.get(
    "/api/templates/{template_id}/draft", response_model=TemplateVersion, responses=problems(401, 403, 404, 422)
)
async def get_draft(template_id: TemplateId, caller: TemplateAuthor, state: State) -> TemplateVersion:
    """The tenant's draft of a template."""
    return TemplateVersion.model_validate(await state.templates.draft(caller.tenant, template_id))


@router.post(
    "/api/templates/{template_id}/publish", response_model=TemplateVersion, responses=problems(401, 403, 409, 422)
)
async def publish_template(template_id: TemplateId, caller: TemplateAuthor, state: State) -> TemplateVersion:
    """The draft becomes the next version; published versions never change (audit record)."""
    published = await state.templates.publish(caller.tenant, template_id, caller.actor)
    state.intake.forget_tenant(caller.tenant.slug)
    return TemplateVersion.model_validate(published)


@router.post(
    "/api/templates/{template_id}/rollback",
    response_model=TemplateVersion,
    responses=problems(400, 401, 403, 409, 413, 422),
)
async def rollback_template(
    template_id: TemplateId, body: RollbackRequest, caller: TemplateAuthor, state: State
) -> TemplateVersion:
    """Publish version ``body.version`` again as the new latest (audit record)."""
    published = await state.templates.rollback(caller.tenant, template_id, body, caller.actor)
    state.intake.forget_tenant(caller.tenant.slug)
    return TemplateVersion.model_validate(published)


@router.get("/api/templates/{template_id}", response_model=TemplateListing, responses=problems(401, 403, 404, 422))
async def list_template_versions(template_id: TemplateId, caller: TemplateAuthor, state: State) -> TemplateListing:
    """The tenant's versions of a template (and its draft), or the shipped ones when it has none."""
    return TemplateListing.model_validate(await state.templates.versions(caller.tenant, template_id))


@router.get(
    "/api/templates/{template_id}/versions/{version}",
    response_model=TemplateVersion,
    responses=problems(401, 403, 404, 422),
)
async def get_template_version(
    template_id: TemplateId,
    version: Annotated[int, Path(ge=1, le=999_999)],
    caller: TemplateAuthor,
    state: State,
) -> TemplateVersion:
    """One of the tenant's published versions."""
    return TemplateVersion.model_validate(await state.templates.version(caller.tenant, template_id, version))
