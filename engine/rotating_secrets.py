"""A per-tenant secret that rotates with an overlap, sealed with the credentials box.

The secret is made the first time it is needed. Rotating makes a new one; the previous one still holds
beside it until ``previous_until`` (a day by default), so the other side can switch at its own pace.
The ingress keys (:mod:`engine.batch.ingress`) and the webhook signing secrets
(:mod:`engine.feedback.signing_keys`) are two kinds of it, each with its own table.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from engine.credentials import CredentialBox
from engine.storage.rotating_secrets import RotatingSecretStore, SealedSecrets

#: How long the previous secret still holds after a rotation.
ROTATION_OVERLAP_S = 24 * 3600.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RotatingSecret:
    """A tenant's current secret and, during a rotation, the previous one with its end."""

    current: str
    previous: str | None = None
    previous_until: datetime | None = None
    rotated_at: datetime | None = None

    def active(self, now: datetime) -> list[str]:
        """The secrets that hold at ``now``: the current first."""
        keep = self.previous is not None and self.previous_until is not None and self.previous_until > now
        return [self.current, self.previous] if keep and self.previous else [self.current]

    def previous_expires_at(self, now: datetime) -> datetime | None:
        """Until when the previous secret still holds, while it does."""
        return self.previous_until if len(self.active(now)) > 1 else None

    def view(self, now: datetime) -> dict[str, object]:
        """What the API shows of it at ``now``: never the previous secret itself."""
        raise NotImplementedError


S = TypeVar("S", bound=RotatingSecret)


class RotatingSecrets(Generic[S]):
    """Reads, creates and rotates tenants' secrets of one kind.

    ``kind`` is what it hands out, ``field`` the name the plaintext is sealed under and ``make`` how a
    new plaintext is drawn.

    Raises (from every read):
        ConfigurationError: a stored secret was sealed with another key.
    """

    def __init__(
        self,
        store: RotatingSecretStore,
        box: CredentialBox,
        *,
        kind: type[S],
        field: str,
        make: Callable[[], str],
        overlap_s: float = ROTATION_OVERLAP_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.box = box
        self.kind = kind
        self.field = field
        self.make = make
        self.overlap_s = overlap_s
        self.clock = clock

    def _new(self) -> str:
        return self.box.seal({self.field: self.make()})

    def _open(self, sealed: SealedSecrets) -> S:
        previous = self.box.open(sealed.previous)[self.field] if sealed.previous else None
        return self.kind(self.box.open(sealed.current)[self.field], previous, sealed.previous_until, sealed.rotated_at)

    async def get(self, tenant_id: uuid.UUID) -> S:
        """The tenant's secrets, a first one made now if it has none."""
        return self._open(await self.store.ensure(tenant_id, self._new()))

    async def rotate(self, tenant_id: uuid.UUID, *, actor: str) -> S:
        """A new current secret; the one it replaces holds beside it for the overlap (audit-logged)."""
        now = self.clock()
        until = now + timedelta(seconds=self.overlap_s)
        return self._open(await self.store.rotate(tenant_id, self._new(), previous_until=until, now=now, actor=actor))

    async def show(self, tenant_id: uuid.UUID) -> dict[str, object]:
        return (await self.get(tenant_id)).view(self.clock())

    async def rotate_and_show(self, tenant_id: uuid.UUID, *, actor: str) -> dict[str, object]:
        """The new secret, and until when the previous one still holds."""
        return (await self.rotate(tenant_id, actor=actor)).view(self.clock())
