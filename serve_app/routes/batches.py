"""``/api/batch``: up to 10,000 notifications in one request; ``/api/batches/{id}``: its progress, its cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from engine.batch import split_items
from serve_app.routes.deps import Reader, Sender, State
from serve_app.schemas.batches import REQUEST_BODY, BatchAccepted, BatchCancelled, BatchView
from serve_app.schemas.problems import problems

router = APIRouter(tags=["batches"])

BatchId = Annotated[str, Path(max_length=64, examples=["bat_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b"])]


@router.post(
    "/api/batch",
    status_code=202,
    response_model=BatchAccepted,
    responses=problems(400, 401, 403, 413, 422),
    openapi_extra=REQUEST_BODY,
)
async def create_batch(request: Request, caller: Sender, state: State) -> JSONResponse:
    """Accept up to 10,000 notifications (a JSON array, or NDJSON as `application/x-ndjson`; the body may be
    32 MiB). Each item is checked and keyed on its own and answered in `items`, in request order: one bad
    item never refuses the others. 413 over the size limit, 422 over 10,000 items."""
    items = split_items(await request.body(), request.headers.get("content-type"))
    result = await state.batches.submit(caller.principal, items)
    return JSONResponse(BatchAccepted.of(result), status_code=202)


@router.get("/api/batches/{batch_id}", response_model=BatchView, responses=problems(401, 403, 404, 422))
async def get_batch(batch_id: BatchId, caller: Reader, state: State) -> BatchView:
    """The batch's messages counted by status, the rate they are done at and the time left; another
    tenant's batch is 404."""
    return BatchView.of(await state.batches.progress(caller.tenant, batch_id))


@router.delete("/api/batches/{batch_id}", response_model=BatchCancelled, responses=problems(401, 403, 404, 422))
async def cancel_batch(batch_id: BatchId, caller: Sender, state: State) -> BatchCancelled:
    """Cancel every message of the batch that has not started sending (those sent or sending are left
    alone); a second cancel cancels nothing more."""
    cancelled, progress = await state.batches.cancel(caller.tenant, batch_id, actor=caller.actor)
    return BatchCancelled.model_validate({**BatchView.of(progress).model_dump(), "cancelled": cancelled})
