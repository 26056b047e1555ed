"""``/api/ingress/key``: a tenant admin reads or rotates the key that signs its ingress queue messages."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.routes.deps import State, TenantAdmin
from serve_app.schemas.ingress import IngressKeyOut
from serve_app.schemas.problems import problems

router = APIRouter(tags=["ingress"])


@router.get("/api/ingress/key", response_model=IngressKeyOut, responses=problems(401, 403))
async def get_ingress_key(caller: TenantAdmin, state: State) -> IngressKeyOut:
    """The key that signs the tenant's messages on the ingress queue, and its name (made on first use)."""
    return IngressKeyOut.model_validate(
        {**await state.ingress_keys.show(caller.tenant.id), "queue": state.ingress_queue}
    )


@router.post("/api/ingress/key/rotate", response_model=IngressKeyOut, responses=problems(401, 403))
async def rotate_ingress_key(caller: TenantAdmin, state: State) -> IngressKeyOut:
    """A new ingress key; the previous one still verifies for 24 h, so producers can switch over."""
    shown = await state.ingress_keys.rotate_and_show(caller.tenant.id, actor=caller.actor)
    return IngressKeyOut.model_validate({**shown, "queue": state.ingress_queue})
