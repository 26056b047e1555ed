"""Who asks the lifecycle services, and so which tenants' messages they may see and change."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from engine.models import Tenant


@dataclass(frozen=True, slots=True)
class AdminScope:
    """The platform operator (``tenant_id`` None: every tenant) or one tenant's admin (its own messages
    only). ``actor`` is who is recorded in events and the audit log."""

    actor: str
    tenant_id: uuid.UUID | None = None
    tenant_slug: str | None = None

    @classmethod
    def platform(cls, actor: str) -> AdminScope:
        return cls(actor=actor)

    @classmethod
    def of_tenant(cls, tenant: Tenant, actor: str) -> AdminScope:
        return cls(actor=actor, tenant_id=tenant.id, tenant_slug=tenant.slug)

    @property
    def is_platform(self) -> bool:
        return self.tenant_id is None
