"""``/api/preview``: render the notification a caller would send, with everything an author should know."""

from __future__ import annotations

from fastapi import APIRouter

from engine.template_service import PreviewRequest
from serve_app.routes.deps import State, TemplateAuthor
from serve_app.schemas.problems import problems
from serve_app.schemas.templates import PreviewResult

router = APIRouter(tags=["templates"])


@router.post("/api/preview", response_model=PreviewResult, responses=problems(400, 401, 403, 413, 422))
async def preview(body: PreviewRequest, caller: TemplateAuthor, state: State) -> PreviewResult:
    """Render any version for any locale and channel from the body of ``POST /api/notifications``
    (``to`` optional; manifest examples stand in for missing variables): parts, locale used, variables
    used and missing, warnings, SMS encoding and segments. ``tenant_id``, when given, must be the token's."""
    return PreviewResult.model_validate(await state.templates.preview(caller.tenant, body))
