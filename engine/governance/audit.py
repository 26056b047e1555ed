"""The audit log's listing: ``GET /admin/audit`` (the platform: every tenant's records and its own) and
``GET /api/audit`` (a tenant admin: its own tenant's), newest first, filtered by tenant, action (exact, or
a prefix ending in ``*``: ``dlq.*``), actor and time, with cursors.

Records are whatever writers stored since the walking skeleton (template publishes, credentials, config
changes, replays, API keys, suppressions). Some older rows hold ``detail`` as a JSON string of an object
rather than the object; both read as the object.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.lifecycle.scope import AdminScope
from engine.models import FieldError
from engine.problems import ApiProblem, from_pydantic
from engine.storage.audit_store import AuditQuery, AuditRow, AuditStore
from engine.timestamps import Instant

SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MAX_PAGE = 200
_CURSOR_KIND = "audit"
#: A tenant id no tenant has: a filter naming an unknown tenant matches nothing.
_NOBODY = uuid.UUID(int=0)


class AuditFilter(BaseModel):
    """Which records (every field narrows; omitted: any)."""

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(None, pattern=SLUG, description="platform only: one tenant's slug")
    action: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_.]{0,63}\*?$", description="tenant.config, or a prefix such as dlq.*"
    )
    actor: str | None = Field(None, min_length=1, max_length=255)
    after: Instant | None = Field(None, description="recorded at or after (inclusive)")
    before: Instant | None = Field(None, description="recorded before (exclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> AuditFilter:
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise ValueError("after must be earlier than before")
        return self


class AuditEntry(BaseModel):
    id: int
    tenant: str | None = Field(description="the tenant's slug; null for the platform's own records")
    actor: str
    action: str
    subject: str | None
    detail: dict[str, Any]
    created_at: datetime


class AuditPage(BaseModel):
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[AuditEntry]
    next_cursor: str | None = None


def detail_of(stored: Any) -> dict[str, Any]:
    """A record's detail as an object, whichever way it was stored: an object, a JSON string of one (older
    writers encoded it twice), or anything else kept under ``value``."""
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except ValueError:
            return {"value": stored}
    if isinstance(stored, dict):
        return stored
    return {} if stored is None else {"value": stored}


class AuditLog:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    async def list(
        self,
        scope: AdminScope,
        filters: AuditFilter | Mapping[str, Any] | None = None,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> AuditPage:
        """Raises: ApiProblem 403 (a tenant admin naming another tenant), 422 (the field at fault)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ApiProblem(422, "limit out of range", errors=[FieldError(("query", "limit"), f"1 to {MAX_PAGE}")])
        chosen = _parse(filters or {})
        after = _decode(cursor)
        query = await self._query(scope, chosen)
        rows = await self.store.page(query, after, limit + 1)
        last = rows[limit - 1] if len(rows) > limit else None
        return AuditPage(items=[_entry(r) for r in rows[:limit]], next_cursor=_encode(last) if last else None)

    async def _query(self, scope: AdminScope, f: AuditFilter) -> AuditQuery:
        if scope.is_platform:
            tenant_id = (await self.store.tenant_id(f.tenant) or _NOBODY) if f.tenant else None
        elif f.tenant is not None and f.tenant != scope.tenant_slug:
            raise ApiProblem(
                403,
                "a tenant admin sees only its own audit records",
                errors=[FieldError(("query", "tenant"), "only the platform operator may name another tenant")],
            )
        else:
            tenant_id = scope.tenant_id
        exact, prefix = f.action, None
        if f.action is not None and f.action.endswith("*"):
            exact, prefix = None, f.action[:-1]
        return AuditQuery(
            tenant_id=tenant_id, action=exact, action_prefix=prefix, actor=f.actor, after=f.after, before=f.before
        )


def _entry(r: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=r.id,
        tenant=r.tenant,
        actor=r.actor,
        action=r.action,
        subject=r.subject,
        detail=detail_of(r.detail),
        created_at=r.created_at,
    )


def _encode(row: AuditRow) -> str:
    raw = f"{_CURSOR_KIND}|{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str | None) -> tuple[datetime, int] | None:
    """Raises: ApiProblem 422 naming ``query.cursor`` for anything this list did not hand out."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, at, row_id = raw.split("|")
        position = datetime.fromisoformat(at), int(row_id)
        if kind != _CURSOR_KIND or position[0].tzinfo is None:
            raise ValueError(kind)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiProblem(
            422, "unknown cursor", errors=[FieldError(("query", "cursor"), "pass back the next_cursor of a page")]
        ) from None
    return position


def _parse(value: AuditFilter | Mapping[str, Any]) -> AuditFilter:
    if isinstance(value, AuditFilter):
        return value
    try:
        return AuditFilter.model_validate(dict(value))
    except ValidationError as err:
        errors = from_pydantic(err.errors(include_url=False), prefix="query")
        raise ApiProblem(422, "the query is not valid", errors=errors) from None
