"""API keys per tenant (``POST/GET/DELETE /api/keys``): opaque, stored hashed, scoped, listed with last use,
revoked within a second on every replica, optionally in test mode.

A key reads ``hk_live_<id>_<secret>`` (``hk_test_`` in test mode): ``hk_live_<id>`` is its public name
(listed, and the id ``DELETE /api/keys/{id}`` takes), the secret 256 random bits. Only an HMAC-SHA256
of the whole key under the server's key is stored: a fast keyed hash is enough for a secret that
long (nothing to brute-force), and without the server's key a leaked table reveals nothing.

:class:`ApiKeyVerifier` is the hot path: a key's row is read once per process and cached; revocations
reach it through a snapshot with a version (one small statement at most once per ``max_staleness_s``),
and last use is written for all keys at once every few seconds, never per request. Verification returns
the same :class:`~engine.auth.Principal` a JWT does; :class:`Authenticator` takes either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from engine.auth import AuthError, PlatformPrincipal, Principal, VerifiedTokens
from engine.ids import new_id
from engine.lifecycle.cursor import Position, decode_cursor, encode_cursor
from engine.models import FieldError, Tenant
from engine.problems import ApiProblem, from_pydantic
from engine.storage.keys_store import ApiKeyStore, KeyRecord, NewKey
from engine.timestamps import Instant

from .periods import utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "hk_"
_KEY = re.compile(r"^(hk_(?:live|test)_[0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_PUBLIC_ID = re.compile(r"^hk_(?:live|test)_[0-9a-f]{16}$")
_CURSOR_KIND = "keys"
MAX_PAGE = 200

#: A tenant scope (engine.auth.SCOPES), as the request model checks it.
Scope = Literal["send", "read", "templates", "admin"]


def new_key(*, test_mode: bool) -> tuple[str, str]:
    """``(public id, whole key)`` of a fresh key."""
    public = f"{KEY_PREFIX}{'test' if test_mode else 'live'}_{secrets.token_hex(8)}"
    return public, f"{public}_{secrets.token_urlsafe(32)}"


def pepper_from(secret: str) -> bytes:
    """The key API keys are hashed under, derived from the server's secret (so it is used for nothing else)."""
    return hmac.new(secret.encode(), b"herald api keys", hashlib.sha256).digest()


def key_hash(pepper: bytes, key: str) -> bytes:
    return hmac.new(pepper, key.encode(), hashlib.sha256).digest()


def is_api_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key (JWTs start ``ey``)."""
    return token.startswith(KEY_PREFIX)


class CreateKeyRequest(BaseModel):
    """``POST /api/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="what the key is for (shown in the list)")
    scopes: list[Scope] = Field(min_length=1, max_length=4, description="admin includes the others")
    test_mode: StrictBool = Field(False, description="its messages go to the sink provider and are marked as tests")
    expires_at: Instant | None = Field(None, description="refused from then on; null: until revoked")

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a scope more than once")
        return value


class KeyView(BaseModel):
    """A key as listed: never its secret."""

    id: str = Field(description="its public name (hk_live_... or hk_test_...)")
    name: str
    scopes: list[str]
    test_mode: bool
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="recorded every few seconds, not per request")
    revoked_at: datetime | None


class CreatedKey(KeyView):
    key: str = Field(description="the whole key: shown this once, never again")


class KeyPage(BaseModel):
    items: list[KeyView]
    next_cursor: str | None = None


def _view(r: KeyRecord) -> dict[str, Any]:
    return {
        "id": r.prefix,
        "name": r.name,
        "scopes": list(r.scopes),
        "test_mode": r.test_mode,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "last_used_at": r.last_used_at,
        "revoked_at": r.revoked_at,
    }


class ApiKeyService:
    """Create, list and revoke a tenant's keys (a tenant admin's routes)."""

    def __init__(
        self,
        store: ApiKeyStore,
        *,
        pepper: bytes,
        verifier: ApiKeyVerifier | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``verifier``: this replica's, told of its own revocations at once."""
        self.store = store
        self.pepper = pepper
        self.verifier = verifier
        self.clock = clock

    async def create(self, tenant: Tenant, body: CreateKeyRequest | Mapping[str, Any], *, actor: str) -> CreatedKey:
        """Raises: ApiProblem 422 naming the field at fault."""
        request = _parse(body)
        if request.expires_at is not None and request.expires_at <= self.clock():
            raise ApiProblem(422, "expires_at is in the past", errors=[_err(("body", "expires_at"), "must be later")])
        public, key = new_key(test_mode=request.test_mode)
        record = await self.store.create(
            NewKey(
                id=new_id(),
                tenant_id=tenant.id,
                prefix=public,
                secret_hash=key_hash(self.pepper, key),
                name=request.name,
                scopes=tuple(request.scopes),
                test_mode=request.test_mode,
                created_by=actor,
                expires_at=request.expires_at,
            ),
            audit={"name": request.name, "scopes": request.scopes, "test_mode": request.test_mode},
        )
        return CreatedKey(**_view(record), key=key)

    async def list(self, tenant: Tenant, *, cursor: str | None = None, limit: int = 50) -> KeyPage:
        """Newest first. Raises: ApiProblem 422 (``query.limit``, ``query.cursor``)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ApiProblem(422, "limit out of range", errors=[_err(("query", "limit"), f"1 to {MAX_PAGE}")])
        after = decode_cursor(_CURSOR_KIND, cursor)
        rows = await self.store.page(tenant.id, (after.at, after.id) if after else None, limit + 1)
        last = rows[limit - 1] if len(rows) > limit else None
        return KeyPage(
            items=[KeyView(**_view(r)) for r in rows[:limit]],
            next_cursor=encode_cursor(_CURSOR_KIND, Position(last.created_at, last.id)) if last else None,
        )

    async def revoke(self, tenant: Tenant, key_id: str, *, actor: str) -> KeyView:
        """Revoke one of the tenant's keys (again: answers as the first time did).

        Raises: ApiProblem 404 for a malformed id or another tenant's key.
        """
        found = None
        if _PUBLIC_ID.match(key_id):
            found, _ = await self.store.revoke(tenant.id, key_id, actor=actor)
        if found is None:
            raise ApiProblem(404, "no such API key")
        if self.verifier is not None:
            self.verifier.revoked_here(found.id)
        return KeyView(**_view(found))


class ApiKeyVerifier:
    """One process's key checks: cached rows, a revocation snapshot, last use written in batches."""

    def __init__(
        self,
        store: ApiKeyStore,
        *,
        pepper: bytes,
        max_staleness_s: float = 1.0,
        unknown_ttl_s: float = 5.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.pepper = pepper
        self.max_staleness_s = max_staleness_s
        self.unknown_ttl_s = unknown_ttl_s
        self.cache_size = cache_size
        self.clock = clock
        self.wall = wall
        self.version = -1  #: the revocation version this process has seen (-1: none read yet)
        self.revoked: set[uuid.UUID] = set()
        self._read_at = -float("inf")
        self._records: OrderedDict[str, KeyRecord] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._used: dict[uuid.UUID, datetime] = {}
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> Principal:
        """The tenant principal of an API key.

        Raises:
            AuthError: malformed, unknown, wrong secret, revoked or expired (the message never repeats it).
        """
        match = _KEY.match(token)
        if match is None:
            raise AuthError("invalid API key")
        public = match.group(1)
        await self._fresh()
        record = await self._record(public)
        if record is None or not hmac.compare_digest(key_hash(self.pepper, token), record.secret_hash):
            raise AuthError("invalid API key")
        if record.revoked_at is not None or record.id in self.revoked:
            raise AuthError("this API key was revoked")
        now = self.wall()
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthError("this API key has expired")
        self._used[record.id] = now
        return Principal(record.tenant, frozenset(record.scopes), test=record.test_mode, key_id=record.prefix)

    def revoked_here(self, key_id: uuid.UUID) -> None:
        """A revocation made by this process: in force here before the next snapshot."""
        self.revoked.add(key_id)

    async def refresh(self) -> None:
        """Catch up with revocations made anywhere (one statement)."""
        async with self._lock:
            await self._refresh_locked()

    async def flush_last_used(self) -> int:
        """Write every key's last use since the previous flush in one statement; how many keys."""
        used, self._used = self._used, {}
        try:
            await self.store.touch(list(used.items()))
        except BaseException:
            for key_id, at in used.items():
                self._used[key_id] = max(at, self._used.get(key_id, at))
            raise
        return len(used)

    async def run(self, stop: asyncio.Event, *, refresh_s: float = 0.5, flush_s: float = 10.0) -> None:
        """Keep the snapshot fresh and flush last use until ``stop`` is set (then flush once more)."""
        flushed_at = self.clock()
        while not stop.is_set():
            try:
                await self.refresh()
                if self.clock() - flushed_at >= flush_s:
                    flushed_at = self.clock()
                    await self.flush_last_used()
            except (asyncpg.PostgresError, OSError) as err:
                log.warning("API key snapshot or last-use flush failed (%s)", type(err).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), refresh_s)
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            await self.flush_last_used()

    # -- steps -------------------------------------------------------------------------------------

    async def _fresh(self) -> None:
        if self.clock() - self._read_at <= self.max_staleness_s:
            return
        async with self._lock:
            if self.clock() - self._read_at > self.max_staleness_s:
                await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        started = self.clock()
        version, revoked = await self.store.snapshot(self.version)
        self.revoked |= revoked
        self.version = version
        self._read_at = started

    async def _record(self, public: str) -> KeyRecord | None:
        record = self._records.get(public)
        if record is not None:
            self._records.move_to_end(public)
            return record
        until = self._unknown.get(public)
        if until is not None and until > self.clock():
            return None
        record = await self.store.by_prefix(public)
        if record is None:
            _bounded(self._unknown, self.cache_size)[public] = self.clock() + self.unknown_ttl_s
            return None
        self._unknown.pop(public, None)
        _bounded(self._records, self.cache_size)[public] = record
        return record


class Authenticator:
    """Either credential a bearer header may carry: an API key, or a JWT as before."""

    def __init__(self, secret: str, keys: ApiKeyVerifier) -> None:
        self.secret = secret
        self.keys = keys
        self.tokens = VerifiedTokens(secret)  #: JWTs this replica verified, until each expires

    async def authenticate(self, authorization: str | None) -> Principal | PlatformPrincipal:
        """Raises: AuthError (401)."""
        if not authorization:
            raise AuthError("missing Authorization header (expected 'Bearer <token>')")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization must be 'Bearer <token>'")
        if is_api_key(token):
            return await self.keys.verify(token)
        return self.tokens.decode(token)


def _bounded(cache: OrderedDict[str, Any], size: int) -> OrderedDict[str, Any]:
    while len(cache) >= size:
        cache.popitem(last=False)
    return cache


def _parse(body: CreateKeyRequest | Mapping[str, Any]) -> CreateKeyRequest:
    if isinstance(body, CreateKeyRequest):
        return body
    if not isinstance(body, Mapping):
        raise ApiProblem(422, "the body must be an object", errors=[_err(("body",), "expected an object")])
    try:
        return CreateKeyRequest.model_validate(dict(body))
    except ValidationError as err:
        errors = from_pydantic(err.errors(include_url=False))
        raise ApiProblem(422, "the request is not valid", errors=errors) from None


def _err(loc: tuple[str | int, ...], msg: str) -> FieldError:
    return FieldError(loc, msg)
