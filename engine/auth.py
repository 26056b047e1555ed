"""Bearer tokens (HS256 JWTs, ``aud: herald``) and the two kinds of principal they name.

- A tenant principal: claims ``tenant`` (slug) and ``scope`` (space-separated: send read templates admin).
  It acts for its own tenant only; ``admin`` includes the other tenant scopes.
- The platform operator: claim ``scope: platform`` and no ``tenant``. It sees platform-wide views and
  acts for no tenant. A token that names a tenant *and* the platform scope is refused, so no tenant
  token can be turned into a platform one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

AUDIENCE = "herald"
ADMIN = "admin"
#: The scopes a tenant principal can hold.
SCOPES = ("send", "read", "templates", ADMIN)
#: The platform operator's one scope.
PLATFORM = "platform"
PLATFORM_SUBJECT = "platform"
DEFAULT_TTL_S = 30 * 24 * 3600


class AuthError(Exception):
    """The token is missing, malformed, expired or for someone else (401)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A tenant principal: acts for ``tenant`` within its scopes. ``test``: an API key in test mode (its
    messages go to the ``sink`` provider and are marked as tests); ``key_id``: the API key it came with
    (None for a JWT)."""

    tenant: str
    scopes: frozenset[str]
    test: bool = False
    key_id: str | None = None

    def can(self, scope: str) -> bool:
        """``admin`` includes the other tenant scopes, never the platform's."""
        return scope in self.scopes or (ADMIN in self.scopes and scope in SCOPES)


@dataclass(frozen=True, slots=True)
class PlatformPrincipal:
    """The platform operator: platform-wide views, no tenant of its own."""

    subject: str = PLATFORM_SUBJECT

    def can(self, scope: str) -> bool:
        return scope == PLATFORM


def issue_token(secret: str, tenant: str, *, scopes: tuple[str, ...], ttl_s: int = DEFAULT_TTL_S) -> str:
    """A tenant token.

    Raises:
        ValueError: ``scopes`` names the platform scope (tenant tokens never carry it).
    """
    if PLATFORM in scopes:
        raise ValueError("a tenant token cannot carry the platform scope")
    now = int(time.time())
    claims = {"tenant": tenant, "scope": " ".join(scopes), "aud": AUDIENCE, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def issue_platform_token(secret: str, *, ttl_s: int = DEFAULT_TTL_S) -> str:
    now = int(time.time())
    claims = {"sub": PLATFORM_SUBJECT, "scope": PLATFORM, "aud": AUDIENCE, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, authorization: str | None) -> Principal | PlatformPrincipal:
    """The principal of an ``Authorization: Bearer <jwt>`` header.

    Raises:
        AuthError: missing, malformed, expired, wrongly signed, or naming no principal.
    """
    if not authorization:
        raise AuthError("missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization must be 'Bearer <token>'")
    return decode_token(secret, token.strip())


def decode_token(secret: str, token: str) -> Principal | PlatformPrincipal:
    """Raises: AuthError (see :func:`verify_token`)."""
    return _decode(secret, token)[0]


def _decode(secret: str, token: str) -> tuple[Principal | PlatformPrincipal, float]:
    """The token's principal and its expiry (epoch seconds). Raises: AuthError."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE, options={"require": ["exp", "aud"]})
    except jwt.PyJWTError as err:
        raise AuthError(f"invalid token: {err}") from err
    scopes = frozenset(str(claims.get("scope", "")).split())
    tenant = claims.get("tenant")
    expires = float(claims["exp"])
    if PLATFORM in scopes:
        if tenant is not None:
            raise AuthError("invalid token: a platform token names no tenant")
        return PlatformPrincipal(), expires
    if not isinstance(tenant, str) or not tenant:
        raise AuthError("invalid token: no tenant claim")
    return Principal(tenant=tenant, scopes=scopes), expires


class VerifiedTokens:
    """Tokens this process has verified, with their principal, until each expires.

    A token cannot change, so its verdict holds until its ``exp``; verifying it (HMAC, claims) again on
    every request costs more than the rest of an accept's admission. Only valid tokens are kept; when
    ``max_entries`` are held the whole map is dropped (a bound, not an LRU: callers reuse a few tokens).
    """

    def __init__(self, secret: str, *, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._max = max_entries
        self._clock = clock
        self._known: dict[str, tuple[Principal | PlatformPrincipal, float]] = {}

    def decode(self, token: str) -> Principal | PlatformPrincipal:
        """As :func:`decode_token`. Raises: AuthError."""
        known = self._known.get(token)
        if known is not None:
            if self._clock() < known[1]:
                return known[0]
            del self._known[token]
        principal, expires = _decode(self._secret, token)
        if len(self._known) >= self._max:
            self._known.clear()
        self._known[token] = (principal, expires)
        return principal
