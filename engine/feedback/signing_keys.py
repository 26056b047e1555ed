"""One webhook signing secret per tenant, in the ``whsec_`` form, stored sealed.

The secret is made the first time it is needed (shown, or used to sign), sealed with the credentials
box (Fernet, the key of tenants' provider credentials). Rotating makes a new one; the previous one keeps
signing beside it for :data:`ROTATION_OVERLAP_S` (24 h), so receivers can switch at their own pace: every
delivery in that window carries both signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from engine.credentials import CredentialBox
from engine.feedback.signing import WebhookSigner, new_secret
from engine.rotating_secrets import ROTATION_OVERLAP_S, RotatingSecret, RotatingSecrets, utcnow
from engine.storage.rotating_secrets import WEBHOOK_SECRETS, RotatingSecretStore

_FIELD = "whsec"


@dataclass(frozen=True, slots=True)
class TenantSecrets(RotatingSecret):
    """A tenant's current signing secret and, during a rotation, the previous one with its end."""

    def signer(self, now: datetime) -> WebhookSigner:
        return WebhookSigner(self.active(now))

    def view(self, now: datetime) -> dict[str, object]:
        """What ``GET /api/webhooks/secret`` shows: the current secret, and until when the previous one
        still signs (never the previous secret itself)."""
        until = self.previous_expires_at(now)
        return {
            "secret": self.current,
            "previous_expires_at": until.isoformat() if until else None,
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
        }


class WebhookSecrets(RotatingSecrets[TenantSecrets]):
    """Reads, creates and rotates tenants' signing secrets (``GET /api/webhooks/secret`` shows them,
    ``POST /api/webhooks/secret/rotate`` rotates them)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: CredentialBox,
        *,
        overlap_s: float = ROTATION_OVERLAP_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(
            RotatingSecretStore(pool, WEBHOOK_SECRETS),
            box,
            kind=TenantSecrets,
            field=_FIELD,
            make=new_secret,
            overlap_s=overlap_s,
            clock=clock,
        )
