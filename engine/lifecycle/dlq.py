"""The DLQ: dead messages listed with filters and counts, and replayed into the normal pipeline
(``GET /admin/dlq``, ``POST /admin/dlq/replay``).

PostgreSQL is the DLQ's truth (``status = 'dead'``); the ``notifications.dlq.<channel>`` queues only carry a
capped copy for outside consumers. A replay moves ``dead -> queued`` with a fresh attempt budget and an
outbox row, so routing, throttling and the TTL check apply as to any message; one whose TTL has passed
becomes ``expired`` instead and is never sent. A message already replayed is no longer dead, so a second
replay does nothing to it. Every replay writes one audit record: who, what selection, how many.

A tenant admin sees and replays only its own dead messages; the platform operator sees every tenant's.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from engine.channels import Channel
from engine.errors import FailureClass
from engine.ids import format_message_id, parse_message_id
from engine.lifecycle.cursor import Position, decode_cursor, encode_cursor
from engine.lifecycle.scope import AdminScope
from engine.models import FieldError
from engine.problems import ApiProblem, from_pydantic
from engine.routing.query import allow_list
from engine.storage.dlq_store import Candidate, DeadLetterStore, DeadQuery, DeadRow, Replay
from engine.timestamps import Instant

SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
PROVIDER = r"^[a-z][a-z0-9_]{0,31}$"
MAX_PAGE = 200
MAX_REPLAY_IDS = 1000
_CURSOR_KIND = "dlq"
#: A tenant id no tenant has: a filter naming an unknown tenant matches nothing.
_NOBODY = uuid.UUID(int=0)


class DeadFilter(BaseModel):
    """Which dead messages (every field narrows; omitted: any)."""

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(None, pattern=SLUG, description="platform only: one tenant's slug")
    channel: Channel | None = None
    provider: str | None = Field(None, pattern=PROVIDER, description="the provider of the last attempt")
    error_class: FailureClass | None = Field(None, description="the last attempt's failure class")
    dead_after: Instant | None = Field(None, description="dead at or after (inclusive)")
    dead_before: Instant | None = Field(None, description="dead before (exclusive)")


class ReplayRequest(BaseModel):
    """``POST /admin/dlq/replay``: exactly one of ``ids``, ``filter`` or ``all: true``."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(None, min_length=1, max_length=MAX_REPLAY_IDS, description="msg_... ids")
    filter: DeadFilter | None = None
    all: StrictBool = Field(False, description="every dead message in the caller's scope")
    to_provider: str | None = Field(
        None, pattern=PROVIDER, description="send the replayed messages through this provider"
    )

    @model_validator(mode="after")
    def _one_selector(self) -> ReplayRequest:
        if sum((self.ids is not None, self.filter is not None, self.all)) != 1:
            raise ValueError("give exactly one of ids, filter or all: true")
        return self


class LastError(BaseModel):
    error_class: str
    code: str | None
    detail: str | None


class DeadLetter(BaseModel):
    message_id: str
    tenant: str
    channel: str
    template_id: str
    priority: str
    provider: str | None
    attempts: int
    error: LastError | None
    created_at: datetime
    dead_at: datetime
    expires_at: datetime | None


class DeadCounts(BaseModel):
    """Every dead message the filters match (not only this page's)."""

    total: int
    by_channel: dict[str, int]
    by_error_class: dict[str, int]


class DeadPage(BaseModel):
    """Newest dead first; pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[DeadLetter]
    counts: DeadCounts
    next_cursor: str | None = None


class ReplayResult(BaseModel):
    matched: int = Field(description="dead messages the selection found in the caller's scope")
    replayed: int = Field(description="moved to queued with a fresh attempt budget")
    expired: int = Field(description="past their TTL: ended expired, never sent")
    skipped: int = Field(
        description="on a channel to_provider does not serve, or whose tenant's allow-list leaves it out: left dead"
    )
    to_provider: str | None = None


class DeadLetterService:
    def __init__(self, store: DeadLetterStore, *, providers: Mapping[Channel, Collection[str]]) -> None:
        """``providers``: the providers each channel may send through (a replay's ``to_provider`` is one)."""
        self.store = store
        self.providers = providers

    async def list_dead(
        self,
        scope: AdminScope,
        filters: DeadFilter | Mapping[str, Any] | None = None,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> DeadPage:
        """Raises: ApiProblem 403 (a tenant admin naming another tenant), 422 (the field at fault)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ApiProblem(422, "limit out of range", errors=[FieldError(("query", "limit"), f"1 to {MAX_PAGE}")])
        chosen = _parse(DeadFilter, filters or {}, "query")
        after = decode_cursor(_CURSOR_KIND, cursor)
        query = await self._query(scope, chosen, ("query", "tenant"))
        rows = await self.store.page(query, (after.at, after.id) if after else None, limit + 1)
        counts = await self.store.counts(query)
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        return DeadPage(
            items=[_item(r) for r in rows[:limit]],
            counts=DeadCounts(
                total=sum(c.n for c in counts),
                by_channel=_tally((c.channel, c.n) for c in counts),
                by_error_class=_tally((c.error_class or "none", c.n) for c in counts),
            ),
            next_cursor=encode_cursor(_CURSOR_KIND, Position(last.dead_at, last.id)) if last else None,
        )

    async def replay(self, scope: AdminScope, body: ReplayRequest | Mapping[str, Any]) -> ReplayResult:
        """Raises: ApiProblem 403 (a tenant admin naming another tenant), 422 (the field at fault)."""
        request = _parse(ReplayRequest, body, "body")
        serves = self._channels_of(request)
        if request.ids is not None:
            query = await self._query(scope, DeadFilter(), ("body", "filter", "tenant"))
            query = DeadQuery(tenant_id=query.tenant_id, ids=_ids(request.ids))
            selector: dict[str, Any] = {"ids": request.ids}
        elif request.filter is not None:
            query = await self._query(scope, request.filter, ("body", "filter", "tenant"))
            selector = {"filter": request.filter.model_dump(mode="json", exclude_none=True)}
        else:
            query = await self._query(scope, DeadFilter(), ("body", "filter", "tenant"))
            selector = {"all": True}

        def decide(found: list[Candidate]) -> Replay:
            # A provider its channel lacks, or its tenant's allow-list leaves out, could never take the
            # message: requeued, it would end failed (no route) and leave the DLQ for good. It stays dead.
            chosen = [m for m in found if serves is None or (m.channel in serves and _allows(m, request.to_provider))]
            return Replay(
                requeue=[m for m in chosen if not m.expired],
                expire=[m for m in chosen if m.expired],
                skipped=len(found) - len(chosen),
                pinned_provider=request.to_provider,
                actor=scope.actor,
                audit_tenant_id=scope.tenant_id,
                audit_detail={"selector": selector, "scope": scope.tenant_slug or "platform"},
            )

        done = await self.store.replay(query, decide)
        return ReplayResult(
            matched=done.matched,
            replayed=len(done.requeue),
            expired=len(done.expire),
            skipped=done.skipped,
            to_provider=done.pinned_provider,
        )

    # -- steps -------------------------------------------------------------------------------------

    async def _query(self, scope: AdminScope, f: DeadFilter, tenant_loc: tuple[str, ...]) -> DeadQuery:
        if scope.is_platform:
            tenant_id = (await self.store.tenant_id(f.tenant) or _NOBODY) if f.tenant else None
        elif f.tenant is not None and f.tenant != scope.tenant_slug:
            raise ApiProblem(
                403,
                "a tenant admin sees only its own dead messages",
                errors=[FieldError(tenant_loc, "only the platform operator may name another tenant")],
            )
        else:
            tenant_id = scope.tenant_id
        return DeadQuery(
            tenant_id=tenant_id,
            channel=f.channel,
            provider=f.provider,
            error_class=f.error_class.value if f.error_class else None,
            dead_after=f.dead_after,
            dead_before=f.dead_before,
        )

    def _channels_of(self, request: ReplayRequest) -> frozenset[Channel] | None:
        """The channels ``to_provider`` serves (None: no provider named, every channel).

        Raises: ApiProblem 422 when no channel has it, or the filter's channel does not."""
        name = request.to_provider
        if name is None:
            return None
        serves = frozenset(c for c, names in self.providers.items() if name in names)
        channel = request.filter.channel if request.filter else None
        if not serves or (channel is not None and channel not in serves):
            where = f"{channel.value} " if channel else ""
            known = sorted({p for c, names in self.providers.items() if channel in (None, c) for p in names})
            msg = f"no {where}provider {name!r} (known: {', '.join(known) or 'none'})"
            raise ApiProblem(422, msg, errors=[FieldError(("body", "to_provider"), msg)])
        return serves


def _allows(m: Candidate, provider: str | None) -> bool:
    allowed = allow_list({"providers": m.providers}, m.channel)
    return allowed is None or provider in allowed


def _parse(model: type[Any], value: Any, where: str) -> Any:
    if isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise ApiProblem(422, f"the {where} must be an object", errors=[FieldError((where,), "expected an object")])
    try:
        return model.model_validate(dict(value))
    except ValidationError as err:
        errors = from_pydantic(err.errors(include_url=False), prefix=where)
        raise ApiProblem(422, "the request is not valid", errors=errors) from None


def _ids(public_ids: list[str]) -> tuple[uuid.UUID, ...]:
    parsed = [parse_message_id(i) for i in public_ids]
    bad = [FieldError(("body", "ids", n), "not a message id (msg_...)") for n, p in enumerate(parsed) if p is None]
    if bad:
        raise ApiProblem(422, "malformed message ids", errors=bad)
    return tuple(p for p in parsed if p is not None)


def _tally(pairs: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in pairs:
        out[key] = out.get(key, 0) + n
    return out


def _item(r: DeadRow) -> DeadLetter:
    error = LastError(error_class=r.error_class, code=r.error_code, detail=r.error_detail) if r.error_class else None
    return DeadLetter(
        message_id=format_message_id(r.id),
        tenant=r.tenant,
        channel=r.channel,
        template_id=f"{r.template_id}:v{r.template_version}",
        priority=r.priority,
        provider=r.provider,
        attempts=r.attempts,
        error=error,
        created_at=r.created_at,
        dead_at=r.dead_at,
        expires_at=r.expires_at,
    )
