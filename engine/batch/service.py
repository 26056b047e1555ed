"""Batches of notifications: each item checked, keyed and answered on its own, all stored at once.

Every item goes through the same checks as ``POST /api/notifications`` (the request model, the tenant,
its own idempotency key, channel, address, template and variables) and gets its own answer: accepted,
replayed (its key was used before with the same body), or refused with its field errors. A bad item never
refuses the others. The accepted ones are stored by :class:`~engine.storage.batch_store.BatchStore` in a
handful of statements and go on through the outbox, relay and senders like any other message.

Postgres alone decides idempotency here: Redis's in-flight markers are the single route's fast path, and
a key the single route stores later still meets the batch's row in ``idempotency_keys``.
"""

from __future__ import annotations

import contextlib
import gc
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from engine.auth import Principal
from engine.channels import Channel
from engine.governance.admission import Admitted
from engine.idempotency import StoredResponse, Verdict, judge, request_hash
from engine.ids import new_id
from engine.intake import Intake, Resolutions, canonical_dump
from engine.json_safety import document_problem
from engine.models import ALLOW_PRIVATE_CALLBACKS, FieldError, NotificationRequest, Tenant
from engine.problems import ApiProblem, from_pydantic
from engine.states import PENDING, Status
from engine.storage.batch_store import BatchRow, BatchStore, StagedMessage

from .parse import Unreadable

BATCH_ID_PREFIX = "bat_"


def format_batch_id(batch_id: uuid.UUID) -> str:
    return BATCH_ID_PREFIX + batch_id.hex


def parse_batch_id(text: str) -> uuid.UUID | None:
    if not text.startswith(BATCH_ID_PREFIX):
        return None
    try:
        return uuid.UUID(hex=text[len(BATCH_ID_PREFIX) :])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's answer: ``code`` 202 (accepted or replayed) with its message, else 409/422 with errors."""

    index: int
    code: int
    message_id: str | None = None
    status: str | None = None
    replayed: bool = False
    errors: tuple[FieldError, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchResult:
    batch_id: str
    items: list[ItemResult]
    accepted: int
    replayed: int
    rejected: int


@dataclass(frozen=True, slots=True)
class BatchProgress:
    batch_id: str
    items: int
    accepted: int
    replayed: int
    rejected: int
    counts: dict[str, int]
    pending: int  #: messages of the batch not yet done (waiting or being sent)
    done: int
    rate_per_s: float | None  #: messages done per second since the batch was accepted
    eta_s: float | None  #: at that rate, seconds until the rest are done
    created_at: datetime
    cancelled_at: datetime | None


@dataclass(slots=True)
class _Pending:
    """An item that passed the checks, waiting for storage to say whether its key was free."""

    index: int
    staged: StagedMessage
    repeats: list[tuple[int, str]] = field(default_factory=list)  #: later items with the same key


class CollectorPause:
    """Checking 10,000 items allocates some 100,000 objects that all stay alive until the batch is stored:
    the cyclic collector would run its passes over them again and again, and once more when switched back
    on before the store (together some 15 % of a batch's CPU). So it stays off while any batch is being
    checked or stored (batches overlap: a count of them) and comes back on with the last one out, when the
    batch's objects have been freed by their reference counts. Under batches that never stop overlapping,
    the young generations are still collected every ``max_off_s``, so other requests' cycles are freed."""

    def __init__(
        self,
        *,
        max_off_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[int], object] = gc.collect,
    ) -> None:
        self.max_off_s = max_off_s
        self.clock = clock
        self.collect = collect
        self._holders = 0
        self._was_enabled = False
        self._off_since = 0.0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._holders == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._off_since = self.clock()
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                if self._was_enabled:
                    gc.enable()
            elif self._was_enabled and self.clock() - self._off_since >= self.max_off_s:
                self.collect(1)
                self._off_since = self.clock()


_collector = CollectorPause()


def _rooted(index: int, errors: Sequence[FieldError]) -> tuple[FieldError, ...]:
    """Errors of one item located under ``body.<index>``; a header key problem becomes its key field's."""
    out = []
    for e in errors:
        if e.loc[:1] == ("header",):
            loc: tuple[str | int, ...] = ("body", index, "idempotency_key")
        else:
            loc = ("body", index, *(e.loc[1:] if e.loc[:1] == ("body",) else e.loc))
        out.append(FieldError(loc, e.msg, e.type))
    return tuple(out)


def _key_reused(index: int) -> ItemResult:
    return ItemResult(
        index,
        422,
        errors=(FieldError(("body", index, "idempotency_key"), "already used with a different request body"),),
    )


class BatchIntake:
    def __init__(self, intake: Intake, store: BatchStore) -> None:
        self.intake = intake
        self.store = store

    async def submit(self, principal: Principal, items: Sequence[Any]) -> BatchResult:
        """Check, key and store a batch's items (parsed JSON values, or :class:`Unreadable`).

        Raises:
            ApiProblem: 401 for an unknown tenant (a batch is one tenant's).
        """
        with _collector.held():
            return await self._submit(principal, items)

    async def _submit(self, principal: Principal, items: Sequence[Any]) -> BatchResult:
        tenant = await self.intake.tenant(principal.tenant)
        if tenant is None:
            raise ApiProblem(401, f"unknown tenant {principal.tenant!r}")
        results: list[ItemResult | None] = [None] * len(items)
        by_key: dict[str, tuple[_Pending, str]] = {}
        memo: Resolutions = {}
        self._check_all(items, principal, tenant, memo, results, by_key)
        pending = [p for p, _ in by_key.values()]
        admitted = await self._admit(tenant, pending, results)
        pending = [p for p in pending if results[p.index] is None]
        batch_id = new_id()
        rejected_early = sum(1 for r in results if r is not None)
        try:
            stored = await self.store.accept(
                tenant.id,
                batch_id,
                [p.staged for p in pending],
                total=len(items),
                rejected=rejected_early,
                idempotency_ttl_s=self.intake.idempotency_ttl_s,
            )
        except BaseException:
            for request, counted in admitted.values():
                self.intake.undo(request, tenant, counted)
            raise
        kept = {p.index for p in pending if p.staged.message.id in stored.created}
        for index, (request, counted) in admitted.items():
            if index not in kept:  # a replay, a repeated or reused key: counts nothing
                self.intake.undo(request, tenant, counted)
        replayed = conflicts = 0
        accepted_by_channel: dict[Channel, int] = {}
        for p in pending:
            msg = p.staged.message
            if msg.id in stored.created:
                first_result = ItemResult(p.index, 202, p.staged.response["message_id"], p.staged.status.value)
                accepted_by_channel[msg.channel] = accepted_by_channel.get(msg.channel, 0) + 1
            else:
                first_result = self._earlier(p.index, stored.earlier.get(msg.idempotency_key), msg.request_hash)
                replayed += first_result.replayed
                conflicts += first_result.code != 202
            results[p.index] = first_result
            for index, _ in p.repeats:
                if first_result.code == 202:
                    results[index] = ItemResult(index, 202, first_result.message_id, first_result.status, True)
                    replayed += 1
                else:
                    results[index] = ItemResult(index, first_result.code, errors=_rooted(index, first_result.errors))
                    conflicts += 1
        await self.store.settle_counts(batch_id, replayed=replayed, conflicts=conflicts)
        for channel, n in accepted_by_channel.items():
            self.intake.metrics.inc("notifications_enqueued_total", n, channel=channel.value, tenant=tenant.slug)
        final = [r for r in results if r is not None]
        assert len(final) == len(items)
        accepted = len(stored.created)
        return BatchResult(format_batch_id(batch_id), final, accepted, replayed, len(items) - accepted - replayed)

    async def _admit(
        self, tenant: Tenant, pending: list[_Pending], results: list[ItemResult | None]
    ) -> dict[int, tuple[NotificationRequest, Admitted]]:
        """Count the new items against the tenant's quotas and budgets, in item order: one over a limit
        is answered 429 (with its repeats), the others carry their estimated cost. Keys already in use
        (replays, conflicts) are read first (one statement) and count nothing."""
        admitted: dict[int, tuple[NotificationRequest, Admitted]] = {}
        if self.intake.governance is None or not pending:
            return admitted
        live = await self.store.live_keys(tenant.id, [p.staged.message.idempotency_key for p in pending])
        for p in pending:
            if p.staged.message.idempotency_key in live:
                continue
            checked = p.staged.checked
            assert checked is not None
            try:
                counted = self.intake.admit(checked.request, tenant, checked.resolved)
            except ApiProblem as refused:  # over a quota or the budget: this item (and its repeats) only
                for index in (p.index, *(i for i, _ in p.repeats)):
                    error = FieldError(("body", index), refused.detail, "limit")
                    results[index] = ItemResult(index, refused.status, errors=(error,))
                continue
            if counted is not None:
                admitted[p.index] = (checked.request, counted)
                p.staged = replace(p.staged, message=replace(p.staged.message, estimated_cost=counted.estimate))
        return admitted

    def _check_all(
        self,
        items: Sequence[Any],
        principal: Principal,
        tenant: Tenant,
        memo: Resolutions,
        results: list[ItemResult | None],
        by_key: dict[str, tuple[_Pending, str]],
    ) -> None:
        """Check every item: refusals go to ``results``, the rest to ``by_key`` (first use of each key)."""
        for index, item in enumerate(items):
            checked = self._check(index, item, principal, tenant, memo)
            if isinstance(checked, ItemResult):
                results[index] = checked
                continue
            staged, req_hash = checked
            key = staged.message.idempotency_key
            first = by_key.get(key)
            if first is None:
                by_key[key] = (_Pending(index, staged), req_hash)
            elif first[1] == req_hash:
                first[0].repeats.append((index, req_hash))
            else:
                results[index] = _key_reused(index)

    def _check(
        self,
        index: int,
        item: Any,
        principal: Principal,
        tenant: Tenant,
        memo: Resolutions,
    ) -> ItemResult | tuple[StagedMessage, str]:
        if isinstance(item, Unreadable):
            return ItemResult(index, 422, errors=item.errors)
        if not isinstance(item, dict):
            return ItemResult(index, 422, errors=(FieldError(("body", index), "expected an object", "dict_type"),))
        unstorable = document_problem(item)
        if unstorable is not None:
            return ItemResult(
                index, 422, errors=_rooted(index, unstorable.errors or [FieldError((), unstorable.detail)])
            )
        try:
            request = NotificationRequest.model_validate(
                item, context={ALLOW_PRIVATE_CALLBACKS: self.intake.allow_private_callbacks}
            )
        except ValidationError as err:
            return ItemResult(index, 422, errors=_rooted(index, from_pydantic(err.errors(include_url=False))))
        if request.tenant_id is not None and request.tenant_id != principal.tenant:
            return ItemResult(
                index, 403, errors=(FieldError(("body", index, "tenant_id"), "must be the token's tenant"),)
            )
        if not request.idempotency_key:
            return ItemResult(
                index,
                422,
                errors=(
                    FieldError(
                        ("body", index, "idempotency_key"), "each item needs its own idempotency key", "missing"
                    ),
                ),
            )
        checked, errors = self.intake.validate(request, tenant, None, need_key=True, memo=memo)
        if checked is None:
            return ItemResult(index, 422, errors=_rooted(index, errors))
        dumped = canonical_dump(request, tenant)
        req_hash = request_hash(dumped)
        message, status, response = self.intake.new_message(checked, req_hash, dumped, test=principal.test)
        return StagedMessage(message, status, response, checked), req_hash

    @staticmethod
    def _earlier(index: int, stored: StoredResponse | None, req_hash: str) -> ItemResult:
        verdict = judge(stored, req_hash)
        if verdict is Verdict.CONFLICT:
            return _key_reused(index)
        if stored is None:  # the key expired between the insert and the read
            return ItemResult(
                index, 409, errors=(FieldError(("body", index, "idempotency_key"), "the key changed state; retry"),)
            )
        return ItemResult(index, 202, stored.body.get("message_id"), stored.body.get("status"), replayed=True)

    async def progress(self, tenant: Tenant, batch_id: str) -> BatchProgress:
        """Raises: ApiProblem 404 (no such batch of this tenant)."""
        row = await self._row(tenant, batch_id)
        return progress_of(row)

    async def cancel(self, tenant: Tenant, batch_id: str, *, actor: str) -> tuple[int, BatchProgress]:
        """Cancel what of the batch has not started sending; how many were cancelled, and the progress.

        Raises: ApiProblem 404 (no such batch of this tenant).
        """
        parsed = parse_batch_id(batch_id)
        n = await self.store.cancel(tenant.id, parsed, actor=actor) if parsed else None
        if n is None:
            raise ApiProblem(404, f"no batch {batch_id!r}")
        return n, await self.progress(tenant, batch_id)

    async def _row(self, tenant: Tenant, batch_id: str) -> BatchRow:
        parsed = parse_batch_id(batch_id)
        row = await self.store.progress(tenant.id, parsed) if parsed else None
        if row is None:
            raise ApiProblem(404, f"no batch {batch_id!r}")
        return row


_UNFINISHED = frozenset({*PENDING, Status.SENDING})


def progress_of(row: BatchRow) -> BatchProgress:
    pending = sum(n for s, n in row.counts.items() if s in _UNFINISHED)
    done = sum(n for s, n in row.counts.items() if s not in _UNFINISHED)
    rate = eta = None
    if done and row.last_done_at is not None:
        elapsed = (row.last_done_at - row.created_at).total_seconds()
        if elapsed > 0:
            rate = done / elapsed
            eta = pending / rate if pending else 0.0
    elif not pending:
        eta = 0.0
    if row.last_scheduled_at is not None:  # none of it goes before its time, whatever the rate
        until = max(0.0, (row.last_scheduled_at - row.now).total_seconds())
        eta = until if eta is None else max(eta, until)
    return BatchProgress(
        batch_id=format_batch_id(row.id),
        items=row.items,
        accepted=row.accepted,
        replayed=row.replayed,
        rejected=row.rejected,
        counts=row.counts,
        pending=pending,
        done=done,
        rate_per_s=rate,
        eta_s=eta,
        created_at=row.created_at,
        cancelled_at=row.cancelled_at,
    )
