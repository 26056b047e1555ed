"""Recipient dedupe at send time: the same tenant, template, channel, recipient and rendered content
inside the category's window (``dedupe.<category>.window_seconds``) is sent once.

A sender hashes each rendered message of its batch; the batch's claims go to ``dedupe_claims`` in one
statement (:class:`~engine.storage.dedupe_store.DedupeStore`), so senders on other machines agree on which
message was first. The key leaves out everything a resend changes on its own (message id, idempotency key,
metadata): a different one-time code is different content, a different idempotency key is not.
A message that retries keeps its own claim (it finds itself the holder). A later copy is deduplicated
while the first's claim holds, even if the first then fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg

from engine.delivery import OutboundMessage
from engine.models import ClaimedMessage
from engine.storage.dedupe_store import DedupeClaim, DedupeStore
from engine.templating.links import CLICK_PATH, OPEN_PATH, OPEN_SUFFIX, verify_link

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0


class DeduplicatedHook(Protocol):
    """Told about the messages a batch deduplicated (after they are recorded), e.g. to give back the quota
    admission counted for them (:class:`engine.governance.quotas.DedupeRefunds`)."""

    async def deduplicated(self, messages: Sequence[ClaimedMessage]) -> None: ...


#: Tracked click links and open pixels carry a token signed for the one message: not part of the content.
_TRACKED = re.compile(
    re.escape(CLICK_PATH) + r"([A-Za-z0-9_-]+)|" + re.escape(OPEN_PATH) + r"[A-Za-z0-9_-]+" + re.escape(OPEN_SUFFIX)
)


#: ``json.dumps(doc, sort_keys=True, default=str)``'s encoder, built once (the same bytes, less time).
_CONTENT_JSON = json.JSONEncoder(sort_keys=True, default=str)


def content_hash(msg: ClaimedMessage, out: OutboundMessage, link_secret: str = "") -> bytes:
    """What makes two messages the same send: template, channel, recipient and the rendered parts, with
    what is the message's own taken out: its id, its open pixel, and tracked links (kept as their target)."""
    recipient = msg.address() or ("user_id", str(msg.to.get("user_id") or ""))
    own_id = out.message_id

    def untracked(match: re.Match[str]) -> str:
        token = match.group(1)
        target = verify_link(link_secret, token) if token and link_secret else None
        return f"{CLICK_PATH}{target.url}" if target else "/tracked/"

    def part(text: str | None) -> str | None:
        return _TRACKED.sub(untracked, text).replace(own_id, "") if text else text

    c = out.content
    doc = [
        msg.template_id,
        msg.channel.value,
        list(recipient),
        part(c.subject),
        part(c.html),
        part(c.text),
        part(c.title),
        sorted((k, part(v)) for k, v in c.data.items()),
        out.extra.get("whatsapp_template"),
    ]
    return hashlib.sha256(_CONTENT_JSON.encode(doc).encode()).digest()


class RecipientDedupe:
    """Decides, per batch, which rendered messages are copies of one sent earlier in their window."""

    def __init__(
        self,
        store: DedupeStore,
        *,
        link_secret: str = "",
        on_deduplicated: DeduplicatedHook | None = None,
        prune_every_s: float = PRUNE_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.link_secret = link_secret  #: to read tracked links back to their target
        self.on_deduplicated = on_deduplicated
        self.prune_every_s = prune_every_s
        self.monotonic = monotonic
        self._next_prune = monotonic() + prune_every_s

    async def firsts(self, prepared: Sequence[tuple[ClaimedMessage, OutboundMessage]]) -> dict[uuid.UUID, uuid.UUID]:
        """``{message id: the earlier message it copies}`` for the copies among ``prepared`` (one statement)."""
        keys: dict[uuid.UUID, tuple[uuid.UUID, bytes]] = {}
        claims: dict[tuple[uuid.UUID, bytes], DedupeClaim] = {}
        for msg, out in sorted(prepared, key=lambda p: (p[0].created_at, p[0].id)):
            window = msg.tenant_config.dedupe_window_s(msg.category)
            if window <= 0:
                continue
            key = (msg.tenant_id, content_hash(msg, out, self.link_secret))
            keys[msg.id] = key
            # Copies inside one batch: the oldest accepted claims for all of them.
            claims.setdefault(key, DedupeClaim(msg.tenant_id, key[1], msg.id, float(window)))
        if not claims:
            return {}
        holders = await self.store.claim(sorted(claims.values(), key=lambda c: (c.tenant_id, c.content_hash)))
        await self._prune_now_and_then()
        return {mid: holders[key] for mid, key in keys.items() if holders.get(key, mid) != mid}

    async def _prune_now_and_then(self) -> None:
        now = self.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self.prune_every_s
        try:
            await self.store.prune()
        except (OSError, asyncpg.PostgresError) as err:  # housekeeping: the next prune tries again
            log.warning("pruning expired dedupe claims failed: %s", err)
