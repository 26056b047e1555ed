"""``dedupe_claims``: who was first with a content hash inside its window, decided in PostgreSQL.

One statement per batch inserts every claim; a hash already held by an unexpired claim keeps its holder,
an expired one passes to the newcomer. ``ON CONFLICT DO UPDATE`` always rewrites the row (to itself when
the claim holds), so ``RETURNING`` gives the holder even when another sender committed it a moment ago —
the upsert waits for that sender's row and reads its latest version. Rows are inserted in key order, so
two senders claiming overlapping batches never deadlock.

The claim commits without waiting for its WAL flush, as the send claim does (engine.storage.sql.CLAIM):
under a burst that flush waits behind the burst's writes, and the record that follows the send is durable
and flushes the claim with it. Lost in a crash before that record, the claim goes with the send's lease:
the message is sent again, and claims its content again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

_CLAIM = """
INSERT INTO dedupe_claims AS d (tenant_id, content_hash, message_id, expires_at)
SELECT c.tenant_id, c.content_hash, c.message_id, now() + make_interval(secs => c.window_s)
FROM unnest($1::uuid[], $2::bytea[], $3::uuid[], $4::float8[]) AS c(tenant_id, content_hash, message_id, window_s),
     (SELECT set_config('synchronous_commit', 'off', true)) AS lazy_commit
ORDER BY c.tenant_id, c.content_hash
ON CONFLICT (tenant_id, content_hash) DO UPDATE
SET message_id = CASE WHEN d.expires_at <= now() THEN EXCLUDED.message_id ELSE d.message_id END,
    expires_at = CASE WHEN d.expires_at <= now() THEN EXCLUDED.expires_at ELSE d.expires_at END
RETURNING d.tenant_id, d.content_hash, d.message_id
"""

_PRUNE = """
DELETE FROM dedupe_claims WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM dedupe_claims WHERE expires_at < now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED))
"""


@dataclass(frozen=True, slots=True)
class DedupeClaim:
    tenant_id: uuid.UUID
    content_hash: bytes
    message_id: uuid.UUID
    window_s: float


class DedupeStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, claims: Sequence[DedupeClaim]) -> dict[tuple[uuid.UUID, bytes], uuid.UUID]:
        """The holder of each ``(tenant_id, content_hash)``: the claimant itself, or the earlier message.

        At most one claim per key (the caller settles duplicates inside its batch first).
        """
        if not claims:
            return {}
        rows = await self.pool.fetch(
            _CLAIM,
            [c.tenant_id for c in claims],
            [c.content_hash for c in claims],
            [c.message_id for c in claims],
            [c.window_s for c in claims],
        )
        return {(r["tenant_id"], bytes(r["content_hash"])): r["message_id"] for r in rows}

    async def prune(self, limit: int = 1000) -> int:
        """Drop up to ``limit`` expired claims; how many went."""
        status = await self.pool.execute(_PRUNE, limit)
        return int(status.split()[-1])
