"""``/metrics``: Prometheus exposition, aggregated over every process."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from serve_app.routes.deps import OPEN, State

router = APIRouter(tags=["admin"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    openapi_extra=OPEN,
)
async def metrics(state: State) -> PlainTextResponse:
    """Every process's counters, with the spec's names (bind to an internal interface in production)."""
    return PlainTextResponse(await state.ops.metrics_text(), media_type=PROMETHEUS_TEXT)
