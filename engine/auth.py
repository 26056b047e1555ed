"""Bearer tokens: HS256 JWTs with claims ``tenant``, ``scope``, ``exp``, ``aud: herald``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

AUDIENCE = "herald"
SCOPES = ("send", "read", "templates", "admin")


class AuthError(Exception):
    """The token is missing, malformed, expired or for someone else (401)."""


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def issue_token(secret: str, tenant: str, *, scopes: tuple[str, ...], ttl_s: int = 30 * 24 * 3600) -> str:
    now = int(time.time())
    claims = {"tenant": tenant, "scope": " ".join(scopes), "aud": AUDIENCE, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, authorization: str | None) -> Principal:
    if not authorization:
        raise AuthError("missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp", "aud", "tenant"]},
        )
    except jwt.PyJWTError as err:
        raise AuthError(f"invalid token: {err}") from err
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise AuthError("invalid token: no tenant claim")
    return Principal(tenant=tenant, scopes=frozenset(str(claims.get("scope", "")).split()))
