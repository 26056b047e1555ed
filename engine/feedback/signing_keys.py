"""One webhook signing secret per tenant, in the ``whsec_`` form, stored sealed.

The secret is made the first time it is needed (shown, or used to sign), sealed with the credentials
box (Fernet, the key of tenants' provider credentials). Rotating makes a new one; the previous one keeps
signing beside it for :data:`ROTATION_OVERLAP_S` (24 h), so receivers can switch at their own pace: every
delivery in that window carries both signatures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from engine.credentials import CredentialBox
from engine.feedback.signing import WebhookSigner, new_secret
from engine.storage import webhook_sql as sql

#: How long the previous secret still signs after a rotation.
ROTATION_OVERLAP_S = 24 * 3600.0
_FIELD = "whsec"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TenantSecrets:
    """A tenant's current secret and, during a rotation, the previous one with its end."""

    current: str
    previous: str | None = None
    previous_until: datetime | None = None
    rotated_at: datetime | None = None

    def active(self, now: datetime) -> list[str]:
        """The secrets that sign at ``now``: the current first."""
        keep = self.previous is not None and self.previous_until is not None and self.previous_until > now
        return [self.current, self.previous] if keep and self.previous else [self.current]

    def signer(self, now: datetime) -> WebhookSigner:
        return WebhookSigner(self.active(now))

    def view(self, now: datetime) -> dict[str, object]:
        """What ``GET /api/webhooks/secret`` shows: the current secret, and until when the previous one
        still signs (never the previous secret itself)."""
        rotating = len(self.active(now)) > 1
        return {
            "secret": self.current,
            "previous_expires_at": self.previous_until.isoformat() if rotating and self.previous_until else None,
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
        }


class WebhookSecrets:
    """Reads, creates and rotates tenants' signing secrets."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: CredentialBox,
        *,
        overlap_s: float = ROTATION_OVERLAP_S,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.pool = pool
        self.box = box
        self.overlap_s = overlap_s
        self.clock = clock

    def _seal(self, secret: str) -> str:
        return self.box.seal({_FIELD: secret})

    def _open(self, sealed: str | None) -> str | None:
        return None if sealed is None else self.box.open(sealed)[_FIELD]

    def _secrets(self, row: asyncpg.Record) -> TenantSecrets:
        current = self._open(row["current_sealed"])
        assert current is not None
        return TenantSecrets(current, self._open(row["previous_sealed"]), row["previous_until"], row["rotated_at"])

    async def get(self, tenant_id: uuid.UUID) -> TenantSecrets:
        """The tenant's secrets, a first one made now if it has none.

        Raises:
            ConfigurationError: the stored secret was sealed with another key.
        """
        row = await self.pool.fetchrow(sql.ENSURE_SECRET, tenant_id, self._seal(new_secret()))
        if row is None:
            # A concurrent first call inserted it after this statement's snapshot was taken: the next
            # statement sees the committed row.
            row = await self.pool.fetchrow(sql.ENSURE_SECRET, tenant_id, self._seal(new_secret()))
        if row is None:
            raise RuntimeError(f"no webhook secret could be made for tenant {tenant_id}")
        return self._secrets(row)

    async def show(self, tenant_id: uuid.UUID) -> dict[str, object]:
        """``GET /api/webhooks/secret``: ``{"secret": "whsec_...", "previous_expires_at", "rotated_at"}``."""
        return (await self.get(tenant_id)).view(self.clock())

    async def rotate_and_show(self, tenant_id: uuid.UUID, *, actor: str) -> dict[str, object]:
        """``POST /api/webhooks/secret/rotate``: the new secret, and until when the previous one signs."""
        return (await self.rotate(tenant_id, actor=actor)).view(self.clock())

    async def rotate(self, tenant_id: uuid.UUID, *, actor: str) -> TenantSecrets:
        """A new current secret; the one it replaces signs beside it for the overlap (audit-logged)."""
        now = self.clock()
        until = now + timedelta(seconds=self.overlap_s)
        row = await self.pool.fetchrow(sql.ROTATE_SECRET, tenant_id, self._seal(new_secret()), until, now, actor)
        assert row is not None
        return self._secrets(row)
