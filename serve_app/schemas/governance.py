"""Models of the governance routes: API keys, the audit log, recipients' preferences and the suppression list.

The request and response bodies are the engine's own (``engine.governance``); the query models add the
cursor and page size.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from engine.governance.audit import MAX_PAGE as AUDIT_MAX_PAGE
from engine.governance.audit import AuditEntry, AuditFilter, AuditPage
from engine.governance.keys import MAX_PAGE as KEYS_MAX_PAGE
from engine.governance.keys import CreatedKey, CreateKeyRequest, KeyPage, KeyView
from engine.governance.recipients import MAX_PAGE as SUPPRESSIONS_MAX_PAGE
from engine.governance.recipients import (
    PreferencesBody,
    PreferencesView,
    SuppressionEntry,
    SuppressionPage,
    SuppressionView,
)

__all__ = [
    "AuditEntry",
    "AuditPage",
    "AuditQuery",
    "CreateKeyRequest",
    "CreatedKey",
    "KeyPage",
    "KeyView",
    "PageQuery",
    "PreferencesBody",
    "PreferencesView",
    "RotatedUnsubscribeKey",
    "SuppressionEntry",
    "SuppressionPage",
    "SuppressionQuery",
    "SuppressionView",
]


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(None, max_length=200, description="the previous page's next_cursor")
    limit: int = Field(50, ge=1, le=KEYS_MAX_PAGE, description="entries per page")


class AuditQuery(AuditFilter):
    """``GET /admin/audit`` and ``GET /api/audit``: every filter narrows; newest first."""

    cursor: str | None = Field(None, max_length=200, description="the previous page's next_cursor")
    limit: int = Field(50, ge=1, le=AUDIT_MAX_PAGE, description="records per page")

    def filters(self) -> AuditFilter:
        return AuditFilter.model_validate(self.model_dump(exclude={"cursor", "limit"}))


class SuppressionQuery(BaseModel):
    """``GET /api/suppressions``: the tenant's entries, newest first; ``address`` needs ``channel``."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = Field(None, max_length=16, description="email, sms, whatsapp or push")
    address: str | None = Field(None, max_length=4096, description="one address (needs channel)")
    cursor: str | None = Field(None, max_length=200, description="the previous page's next_cursor")
    limit: int = Field(50, ge=1, le=SUPPRESSIONS_MAX_PAGE, description="entries per page")


class RotatedUnsubscribeKey(BaseModel):
    """``POST /api/unsubscribe/key/rotate``: links are signed with the new generation from now on."""

    generation: int = Field(description="the tenant's unsubscribe key generation now in use")
    previous_expires_at: datetime = Field(description="links signed with the previous key work until then")
