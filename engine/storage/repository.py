"""The Postgres repository: every statement the engine runs, batched where the hot path needs it.

Per batch of claimed messages a sender runs two statements: the claim and :meth:`record` (status,
attempts, events, outbox rows, suppressions and analytics rollups in one statement with data-modifying
CTEs; the event rows' trigger queues them for the tenant's webhook endpoints in the same statement).
Tenant configs are reloaded only when the claim shows a ``config_version`` newer than the one held.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.channels import Channel, Priority
from engine.coalesce import Coalescer
from engine.idempotency import StoredResponse
from engine.ids import new_id
from engine.models import ClaimedMessage, NewMessage, Tenant
from engine.outcomes import Outcome
from engine.states import EventType, Status
from engine.storage.inbox import list_inbox
from engine.tenant_config import TenantConfigCache

from . import sql


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset-on-release (``RESET ALL; UNLISTEN *; ...``), a round trip per statement
    that buys nothing here: the repository leaves no session state behind."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    query_logger: Callable[[Any], None] | None = None,
    generic_plans: bool = False,
) -> asyncpg.Pool:
    """A pool whose connections decode json/jsonb; ``query_logger`` sees every statement sent.

    ``generic_plans``: the connections plan each prepared statement once (``plan_cache_mode`` forced to
    generic), for a process whose statements all look rows up by id (a sender's). PostgreSQL otherwise
    planned the claim anew on every call: its custom plan for a batch's ids always looked cheaper than a
    generic one, and planning took more of the backend's time (about 0.27 ms a claim) than running it.
    """

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if query_logger is not None:
            conn.add_query_logger(query_logger)

    settings = {"plan_cache_mode": "force_generic_plan"} if generic_plans else None
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init, reset=_keep_session, server_settings=settings
    )
    assert pool is not None
    return pool


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    pending: int  #: rows not yet published (due or not)
    later: int  #: of those, rows due in the future (retries, scheduled sends)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    tenant_id: uuid.UUID
    message_id: uuid.UUID
    queue: str
    priority: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """What :meth:`Repository.accept` did with a message."""

    outbox: OutboxRow | None  #: the stored message's outbox row; None when its key was used already
    original: StoredResponse | None = None  #: the key's first answer, when it was used already

    @property
    def created(self) -> bool:
        return self.outbox is not None


@dataclass(frozen=True, slots=True)
class _PendingAccept:
    msg: NewMessage
    response: dict[str, Any]
    status: Status
    ttl_s: float
    hold_s: float = 0.0


def _first_event(status: Status) -> EventType:
    return EventType.SCHEDULED if status is Status.SCHEDULED else EventType.ACCEPTED


def _event_meta(msg: NewMessage) -> dict[str, Any]:
    return {"locale": msg.locale, "template": f"{msg.template_id}:v{msg.template_version}"}


def _accept_columns(rows: Sequence[_PendingAccept]) -> list[list[Any]]:
    """ACCEPT_MANY's parameters: one array per column, then the tags' and the attachments' pairs."""
    columns: list[list[Any]] = [[] for _ in range(28)]
    holds: list[float] = []
    tags: tuple[list[Any], list[Any]] = ([], [])
    atts: tuple[list[Any], ...] = ([], [], [], [], [])
    for p in rows:
        m = p.msg
        values = (
            m.tenant.id, m.idempotency_key, m.request_hash, m.id, p.response, p.ttl_s, m.channel.value,
            m.template_id, m.template_version, m.locale, m.requested_locale, m.to, m.variables, m.metadata,
            m.priority.value, m.schedule_at, m.ttl_seconds, m.expires_at, m.callback_url, m.trace_id,
            p.status.value, f"notifications.{m.priority.value}", m.priority.rank, new_id(),
            _first_event(p.status).value, _event_meta(m), m.category, m.estimated_cost,
        )  # fmt: skip
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        holds.append(p.hold_s)
        for tag in dict.fromkeys(m.tags):
            tags[0].append(m.id)
            tags[1].append(tag)
        for a in m.attachments:
            for column, value in zip(atts, (new_id(), m.id, a.s3, a.filename, a.content_type), strict=True):
                column.append(value)
    return [*columns, *tags, *atts, holds]


#: What one message's data can make a statement raise (asyncpg's client-side encoding errors are
#: ValueErrors); a lost connection is none of these, and fails the whole group.
_ITEM_ERRORS = (asyncpg.PostgresError, ValueError, TypeError)


async def _outcome(call: Awaitable[int | None]) -> int | BaseException | None:
    try:
        return await call
    except _ITEM_ERRORS as err:
        return err


class Repository:
    def __init__(self, pool: asyncpg.Pool, *, configs: TenantConfigCache | None = None) -> None:
        self.pool = pool
        self.configs = configs or TenantConfigCache(pool)  #: this process's parsed tenant configs
        self._accepts: Coalescer[_PendingAccept, int | None] = Coalescer(self._accept_group)

    # -- tenants -----------------------------------------------------------------------------------

    async def get_tenant(self, slug: str) -> Tenant | None:
        row = await self.pool.fetchrow(sql.GET_TENANT, slug)
        return self._tenant(row) if row else None

    async def ensure_tenant(self, slug: str, *, name: str | None = None, region: str = "eu") -> Tenant:
        """The tenant with this slug, created with default settings when it does not exist yet."""
        row = await self.pool.fetchrow(sql.ENSURE_TENANT, new_id(), slug, name or slug, region)
        assert row is not None
        return self._tenant(row)

    def _tenant(self, row: asyncpg.Record) -> Tenant:
        return Tenant(
            id=row["id"],
            slug=row["slug"],
            name=row["name"],
            config=self.configs.from_row(row["id"], row["config_version"], row["region"], row["config"]),
            templates_version=row["templates_version"],
            config_version=row["config_version"],
        )

    # -- accept ------------------------------------------------------------------------------------

    async def accept(
        self,
        msg: NewMessage,
        response: dict[str, Any],
        *,
        status: Status,
        idempotency_ttl_s: int,
        hold_s: float = 0.0,
    ) -> Accepted:
        """Store the message, its outbox row and its first event, with its idempotency key, at once.
        Accepts that arrive while one is being stored go together in the next statement (group commit).
        ``hold_s``: the outbox row is due that much later (the caller publishes it itself, engine.handoff).

        Returns the stored message's outbox row, or, when the key was already used, the key's first
        answer (the caller compares request hashes to replay or refuse).
        """
        pending = _PendingAccept(msg, response, status, float(idempotency_ttl_s), hold_s)
        outbox_id = await self._accepts.submit((msg.tenant.id, msg.idempotency_key), pending)
        if outbox_id is not None:
            queue = f"notifications.{msg.priority.value}"
            return Accepted(OutboxRow(outbox_id, msg.tenant.id, msg.id, queue, msg.priority.rank))
        return Accepted(None, await self.idempotent_response(msg.tenant.id, msg.idempotency_key))

    async def _accept_group(self, group: list[_PendingAccept]) -> list[int | BaseException | None]:
        # A lone accept keeps its own statement: ACCEPT_MANY for one message cost more on both sides (one
        # connection, 1,000 accepts each way: 510-540 us of backend CPU against 340-440, 257-320 us of
        # client CPU against 171-282), and most groups are lone ones below a few hundred requests a second.
        if len(group) == 1:
            return [await self._accept_one(group[0])]
        # one lock order for every group: two groups holding the same keys never wait on each other
        order = sorted(range(len(group)), key=lambda i: (group[i].msg.tenant.id, group[i].msg.idempotency_key))
        in_order = [group[i] for i in order]
        try:
            rows = await self.pool.fetch(sql.ACCEPT_MANY, *_accept_columns(in_order))
        except _ITEM_ERRORS:
            # One message's data broke the statement (nothing of it was stored): each goes on its own, so
            # only that one fails.
            return [await _outcome(self._accept_one(p)) for p in group]
        stored: dict[uuid.UUID, int] = {r["message_id"]: r["id"] for r in rows}
        return [stored.get(p.msg.id) for p in group]

    async def _accept_one(self, pending: _PendingAccept) -> int | None:
        msg, status = pending.msg, pending.status
        att = msg.attachments
        outbox_id: int | None = await self.pool.fetchval(
            sql.ACCEPT,
            msg.tenant.id,
            msg.idempotency_key,
            msg.request_hash,
            msg.id,
            pending.response,
            pending.ttl_s,
            msg.channel.value,
            msg.template_id,
            msg.template_version,
            msg.locale,
            msg.requested_locale,
            msg.to,
            msg.variables,
            msg.metadata,
            msg.priority.value,
            msg.schedule_at,
            msg.ttl_seconds,
            msg.expires_at,
            msg.callback_url,
            msg.trace_id,
            status.value,
            f"notifications.{msg.priority.value}",
            msg.priority.rank,
            new_id(),
            _first_event(status).value,
            _event_meta(msg),
            [new_id() for _ in att],
            [a.s3 for a in att],
            [a.filename for a in att],
            [a.content_type for a in att],
            msg.category,
            list(dict.fromkeys(msg.tags)),
            msg.estimated_cost,
            pending.hold_s,
        )
        return outbox_id

    async def idempotent_response(self, tenant_id: uuid.UUID, key: str) -> StoredResponse | None:
        row = await self.pool.fetchrow(sql.GET_IDEMPOTENCY, tenant_id, key)
        if row is None:
            return None
        return StoredResponse(row["request_hash"], row["status_code"], row["response"])

    # -- read --------------------------------------------------------------------------------------

    async def message_view(self, tenant_id: uuid.UUID, message_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(sql.MESSAGE_VIEW, tenant_id, message_id)
        return dict(row) if row else None

    # -- send path ---------------------------------------------------------------------------------

    async def claim(self, ids: Sequence[uuid.UUID], lease_s: float) -> list[ClaimedMessage]:
        """Lease the sendable messages among ``ids`` (one statement). Ids already sent, or leased by a
        live sender, are not returned, so a redelivered envelope never sends twice."""
        rows = await self.pool.fetch(sql.CLAIM, list(ids), lease_s)
        configs = await self.configs.ensure({r["tenant_id"]: r["config_version"] for r in rows})
        return [
            ClaimedMessage(
                id=r["id"],
                tenant_id=r["tenant_id"],
                tenant_slug=r["slug"],
                tenant_templates_version=r["templates_version"],
                tenant_config=configs[r["tenant_id"]],
                tenant_config_version=r["config_version"],
                pinned_provider=r["pinned_provider"],
                sent_maybe_provider=r["sent_maybe_provider"],
                channel=Channel(r["channel"]),
                template_id=r["template_id"],
                template_version=r["template_version"],
                locale=r["locale"],
                to=r["to"],
                variables=r["variables"],
                metadata=r["metadata"],
                priority=Priority(r["priority"]),
                attempts=r["attempts"],
                created_at=r["created_at"],
                expires_at=r["expires_at"],
                suppression_categories=tuple(r["suppression_categories"]),
                unsubscribe_generation=r["unsubscribe_generation"],
                attachments=tuple(r["attachment_refs"]),
                estimated_cost=r["estimated_cost"],
            )
            for r in rows
        ]

    async def record(self, outcomes: Sequence[Outcome]) -> int:
        """Write a batch's outcomes in one statement; returns how many messages moved.

        A message no longer in ``sending`` (its lease was reclaimed and someone else finished it) is
        left alone: statuses never move backwards.
        """
        if not outcomes:
            return 0
        o = outcomes
        tried = [(x.message_id, t) for x in o for t in x.tried]
        moved: int = await self.pool.fetchval(
            sql.RECORD,
            [x.message_id for x in o],
            [x.tenant_id for x in o],
            [x.status.value for x in o],
            [x.event.value for x in o],
            [x.attempt_no for x in o],
            [x.started_at for x in o],
            [x.provider for x in o],
            [x.provider_message_id for x in o],
            [x.error_class for x in o],
            [x.error_code for x in o],
            [x.error_detail for x in o],
            [x.cost_usd for x in o],
            [x.queue for x in o],
            [x.priority.rank for x in o],
            [x.available_at for x in o],
            [x.refund_attempts for x in o],
            [x.attempted for x in o],
            [json.dumps(x.meta) for x in o],
            [new_id() for _ in o],
            [new_id() for _ in o],
            [x.suppress[0] if x.suppress else None for x in o],
            [x.suppress[1] if x.suppress else None for x in o],
            [x.attempt_outcome for x in o],
            [new_id() for _ in tried],
            [mid for mid, _ in tried],
            [t.provider for _, t in tried],
            [t.started_at for _, t in tried],
            [t.error_class for _, t in tried],
            [t.error_code for _, t in tried],
            [t.error_detail for _, t in tried],
            [t.outcome for _, t in tried],
            [x.deduplicated_of for x in o],
        )
        return moved

    async def reclaim_expired_leases(self, limit: int = 1000) -> int:
        """Messages whose sender died mid-send go back to the queue (one statement)."""
        return int(await self.pool.fetchval(sql.RECLAIM, limit))

    # -- operations views --------------------------------------------------------------------------

    async def counts_by_status(self, tenant_id: uuid.UUID | None = None) -> dict[str, int]:
        """Messages per status: one tenant's, or every tenant's when ``tenant_id`` is None."""
        if tenant_id is None:
            rows = await self.pool.fetch("SELECT status, count(*) AS n FROM messages GROUP BY status")
        else:
            rows = await self.pool.fetch(
                "SELECT status, count(*) AS n FROM messages WHERE tenant_id = $1 GROUP BY status", tenant_id
            )
        return {r["status"]: r["n"] for r in rows}

    async def forget_published(self, outbox_ids: Sequence[int]) -> int:
        """Delete outbox rows whose envelopes were published outside the relay (engine.handoff)."""
        done = await self.pool.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(outbox_ids))
        return int(done.split()[-1])

    async def outbox_counts(self) -> OutboxCounts:
        """What the outbox holds (every tenant's): rows in all, and rows not due yet."""
        row = await self.pool.fetchrow(
            "SELECT count(*) AS pending, count(*) FILTER (WHERE available_at > now()) AS later FROM outbox"
        )
        assert row is not None
        return OutboxCounts(pending=row["pending"], later=row["later"])

    async def ping(self) -> None:
        """Raises: asyncpg / OSError when the database does not answer."""
        await self.pool.fetchval("SELECT 1")

    async def inbox(self, tenant_id: uuid.UUID, user_id: str, limit: int) -> list[dict[str, Any]]:
        """A recipient's in-app messages, newest first (expired ones hidden)."""
        return await list_inbox(self.pool, tenant_id, user_id, limit=limit)


async def take_outbox(
    conn: asyncpg.Connection, limit: int, *, high_only: bool = False, normal: bool = True, low: bool = True
) -> list[OutboxRow]:
    """Due outbox rows (high first, then normal and low unless held back; or high only), deleted inside
    the caller's transaction (commit only after the broker confirmed)."""
    if high_only:
        rows = await conn.fetch(sql.TAKE_OUTBOX_HIGH, limit)
    else:
        rows = await conn.fetch(sql.TAKE_OUTBOX, limit, normal, low)
    taken = [OutboxRow(r["id"], r["tenant_id"], r["message_id"], r["queue"], r["priority"]) for r in rows]
    taken.sort(key=lambda r: (r.priority, r.id))  # deleted in the primary key's order: high first again
    return taken
