"""``/api/partials``: a tenant's partials (``header.html``...), used by its own templates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from engine.template_service import PartialRequest
from serve_app.routes.deps import State, TemplateAuthor
from serve_app.schemas.problems import problems
from serve_app.schemas.templates import Partial, PartialList

router = APIRouter(tags=["templates"])


@router.put("/api/partials/{locale}/{name}", response_model=Partial, responses=problems(400, 401, 403, 413, 422))
async def save_partial(
    locale: Annotated[str, Path(max_length=35, examples=["en"])],
    name: Annotated[str, Path(max_length=100, examples=["header.html"])],
    body: PartialRequest,
    caller: TemplateAuthor,
    state: State,
) -> Partial:
    """Create or replace one of the tenant's partials (parsed in the sandbox first)."""
    saved = await state.templates.save_partial(caller.tenant, locale, name, body, caller.actor)
    state.intake.forget_tenant(caller.tenant.slug)
    return Partial.model_validate(saved)


@router.get("/api/partials", response_model=PartialList, responses=problems(401, 403))
async def list_partials(caller: TemplateAuthor, state: State) -> PartialList:
    """The tenant's partials, by locale and name."""
    return PartialList.model_validate(await state.templates.partials(caller.tenant))
