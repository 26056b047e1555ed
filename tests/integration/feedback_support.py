"""Messages already handed to a provider, written straight into the real database, and SendGrid-shaped
event batches for them: what the delivery feedback tests start from."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.ids import format_message_id, new_id
from engine.models import Tenant

_SENT = """
WITH m AS (
    INSERT INTO messages (id, tenant_id, channel, template_id, template_version, locale, "to", metadata,
                          priority, status, provider, provider_message_id, sent_at, callback_url)
    SELECT u.id, $1, $2, $3, 1, 'en', jsonb_build_object($4::text, u.address),
           jsonb_build_object('category', $5::text), 'normal', $6, $7, u.pmid, now(), $8
    FROM unnest($9::uuid[], $10::text[], $11::text[]) AS u(id, pmid, address)
    RETURNING id, provider_message_id
)
INSERT INTO attempts (id, tenant_id, message_id, attempt_no, provider, provider_message_id, outcome, started_at)
SELECT gen_random_uuid(), $1, m.id, 1, $7, m.provider_message_id, 'sent', now() FROM m
"""


@dataclass(frozen=True, slots=True)
class Sent:
    id: uuid.UUID
    pmid: str
    address: str

    @property
    def public_id(self) -> str:
        return format_message_id(self.id)


async def sent_messages(
    pool: asyncpg.Pool,
    tenant: Tenant,
    n: int,
    *,
    provider: str = "sendgrid",
    channel: str = "email",
    template_id: str = "welcome",
    category: str = "transactional",
    status: str = "sent",
    callback_url: str | None = None,
) -> list[Sent]:
    """``n`` messages in ``status`` with one attempt each at ``provider`` (unique provider ids)."""
    made = [Sent(new_id(), uuid.uuid4().hex[:22], f"r{i}-{uuid.uuid4().hex[:6]}@example.com") for i in range(n)]
    if channel != "email":
        made = [Sent(s.id, s.pmid, f"+4477009{i:05d}") for i, s in enumerate(made)]
    field = "email" if channel == "email" else "phone"
    await pool.execute(
        _SENT,
        tenant.id,
        channel,
        template_id,
        field,
        category,
        status,
        provider,
        callback_url,
        [s.id for s in made],
        [s.pmid for s in made],
        [s.address for s in made],
    )
    return made


def sendgrid_event(sent: Sent, event: str, **extra: Any) -> dict[str, Any]:
    """One event as SendGrid posts it (``sg_message_id`` carries a ``.filter`` suffix)."""
    return {
        "email": sent.address,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"{sent.pmid}.filter0001.16648.5515E0B88.0",
        **extra,
    }


def body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()
