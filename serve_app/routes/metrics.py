"""``/metrics``: Prometheus exposition, aggregated over every process."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from serve_app.routes.deps import Platform, State
from serve_app.schemas.problems import problems

router = APIRouter(tags=["admin"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **problems(401, 403)},
)
async def metrics(_: Platform, state: State) -> PlainTextResponse:
    """Every process's counters, with the spec's names; the platform operator's (its labels name tenants)."""
    return PlainTextResponse(await state.ops.metrics_text(), media_type=PROMETHEUS_TEXT)
