"""Idempotency keys (IETF draft semantics).

- The same key with the same request replays the original response (``Idempotent-Replayed: true``).
- The same key with a different request is 422; a duplicate still in flight is 409.
- "Same request" is the canonical JSON of the body without ``idempotency_key`` and ``trace_id``.

Postgres (``idempotency_keys``) is the truth; Redis, when configured, is a fast path in front of it
(``SET NX`` with the same TTL) that also detects in-flight duplicates. Correctness never depends on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

IGNORED_FIELDS = frozenset({"idempotency_key", "trace_id"})
#: What ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)`` builds on
#: every call, built once: the same bytes (stored hashes stay valid), a third less time per request.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_hash(body: dict[str, Any]) -> str:
    canonical = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    return hashlib.sha256(_CANONICAL_JSON.encode(canonical).encode()).hexdigest()


class KeyProblem(StrEnum):
    MISSING = "missing"
    MISMATCH = "mismatch"  # header and body disagree
    TOO_LONG = "too_long"


def pick_key(header: str | None, body_key: str | None) -> tuple[str | None, KeyProblem | None]:
    """The request's key from the ``Idempotency-Key`` header and/or the body field."""
    if header is not None and body_key is not None and header != body_key:
        return None, KeyProblem.MISMATCH
    key = header if header is not None else body_key
    if not key:
        return None, KeyProblem.MISSING
    if len(key) > 255:
        return None, KeyProblem.TOO_LONG
    return key, None


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status_code: int
    body: dict[str, Any]


class Verdict(StrEnum):
    NEW = "new"
    REPLAY = "replay"
    CONFLICT = "conflict"  # different body: 422
    IN_FLIGHT = "in_flight"  # 409


def judge(stored: StoredResponse | None, incoming_hash: str) -> Verdict:
    if stored is None:
        return Verdict.NEW
    return Verdict.REPLAY if stored.request_hash == incoming_hash else Verdict.CONFLICT


class CacheUnavailable(Exception):
    """The idempotency cache could not answer; the intake goes on with PostgreSQL alone."""


class IdempotencyCache(Protocol):
    """The fast path (Redis). ``claim`` is SET NX of an in-flight marker. Each method raises
    :class:`CacheUnavailable` when the cache cannot be reached: adapters translate their own errors."""

    async def claim(self, tenant: str, key: str, req_hash: str, ttl_s: int) -> tuple[bool, str | None]:
        """``(True, None)`` when this caller owns the key; else ``(False, stored value)``."""
        ...

    async def complete(self, tenant: str, key: str, response: StoredResponse, ttl_s: int) -> None: ...

    async def release(self, tenant: str, key: str) -> None: ...

    async def aclose(self) -> None: ...


IN_FLIGHT_PREFIX = "inflight:"


def encode_response(response: StoredResponse) -> str:
    return json.dumps({"h": response.request_hash, "s": response.status_code, "b": response.body})


def decode_cached(value: str) -> tuple[Verdict | None, StoredResponse | None, str | None]:
    """Interpret a cached value: ``(IN_FLIGHT, None, hash)`` or ``(None, stored, None)``."""
    if value.startswith(IN_FLIGHT_PREFIX):
        return Verdict.IN_FLIGHT, None, value[len(IN_FLIGHT_PREFIX) :]
    doc = json.loads(value)
    return None, StoredResponse(doc["h"], int(doc["s"]), doc["b"]), None
