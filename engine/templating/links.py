"""Signed, stateless link tokens: tracked clicks, open pixels and unsubscribes, with no database write per
render.

A token is ``base64url(payload || tag)`` without padding, where ``tag`` is the first 16 bytes of
HMAC-SHA256(secret, payload). The payload starts with a kind (``c1`` click, ``o1`` open, ``u1``/``u2``/``u3``
unsubscribe, ``u2`` naming the category) so a token of one kind can never be replayed as another, then
the fields joined by the ASCII unit separator
(which cannot occur in a tenant slug, message id, URL or address: they are checked). A token that was
altered in any way fails verification and yields None, never an exception.

Unsubscribe links are signed with the tenant's own key of a generation (``u3``: tenant, generation,
address, category), derived from the secret (:func:`unsubscribe_key`); rotating moves the tenant to the next
generation, and the verifier says which generations it still accepts. Generation 0 is the secret itself:
the ``u1``/``u2`` links made before tenants had keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Collection
from dataclasses import dataclass

#: Path under the public base URL where click redirects are served.
CLICK_PATH = "/l/"
#: Path under the public base URL where one-click unsubscribes are served.
UNSUBSCRIBE_PATH = "/u/"
#: Path under the public base URL where open pixels are served (``/t/o/<token>.gif``).
OPEN_PATH = "/t/o/"
OPEN_SUFFIX = ".gif"

_TAG_BYTES = 16  # 128-bit tag: forging needs 2**128 tries, and it keeps URLs short
_SEP = "\x1f"
_CONTROL = re.compile(r"[\x00-\x1f]")
_CLICK = "c1"
_OPEN = "o1"
_UNSUBSCRIBE = "u1"
_UNSUBSCRIBE_CATEGORY = "u2"
_UNSUBSCRIBE_KEYED = "u3"
_EVERY_CATEGORY = "*"  # no category name starts so


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """Where a tracked click goes and whose message it came from."""

    tenant: str
    message_id: str
    url: str
    index: int


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    """Who asked to stop receiving messages, from which tenant, and of which category (``None``: every
    category; tokens made before categories were carried)."""

    tenant: str
    address: str
    category: str | None = None


@dataclass(frozen=True, slots=True)
class OpenTarget:
    """The message an open pixel belongs to."""

    tenant: str
    message_id: str


def sign_link(secret: str | bytes, tenant: str, message_id: str, url: str, *, index: int = 0) -> str:
    """A token for a tracked link (``index`` is the link's position among the message's links).

    Raises:
        ValueError: empty secret, or a field holding control characters.
    """
    if index < 0:
        raise ValueError("link index must be >= 0")
    return _sign(secret, (_CLICK, tenant, message_id, str(index), url))


def verify_link(secret: str | bytes, token: str) -> LinkTarget | None:
    """The link a token stands for, or None when it is malformed or was not signed with ``secret``."""
    fields = _verify(secret, token, _CLICK, 5)
    if fields is None or not fields[3].isdigit():
        return None
    return LinkTarget(tenant=fields[1], message_id=fields[2], url=fields[4], index=int(fields[3]))


def sign_open(secret: str | bytes, tenant: str, message_id: str) -> str:
    """A token for the open pixel of one message.

    Raises:
        ValueError: empty secret, or a field holding control characters.
    """
    return _sign(secret, (_OPEN, tenant, message_id))


def verify_open(secret: str | bytes, token: str) -> OpenTarget | None:
    """The message of an open token (with or without its ``.gif`` suffix), or None when it is not genuine."""
    fields = _verify(secret, token.removesuffix(OPEN_SUFFIX), _OPEN, 3)
    return None if fields is None else OpenTarget(tenant=fields[1], message_id=fields[2])


def unsubscribe_key(secret: str | bytes, tenant: str, generation: int) -> bytes:
    """The key of ``tenant``'s unsubscribe links of ``generation`` (0: the secret itself)."""
    key = _key(secret)
    if generation == 0:
        return key
    return hmac.new(key, f"herald unsubscribe{_SEP}{tenant}{_SEP}{generation}".encode(), hashlib.sha256).digest()


def sign_unsubscribe(
    secret: str | bytes, tenant: str, address: str, *, category: str | None = None, generation: int = 0
) -> str:
    """A token for a one-click unsubscribe of ``address`` from ``tenant``'s messages of ``category``
    (every category when ``None``), signed with the tenant's key of ``generation``.

    Raises:
        ValueError: empty secret, or a field holding control characters.
    """
    if generation > 0:
        fields = (_UNSUBSCRIBE_KEYED, tenant, str(generation), address, category or _EVERY_CATEGORY)
        return _sign(unsubscribe_key(secret, tenant, generation), fields)
    if category:
        return _sign(secret, (_UNSUBSCRIBE_CATEGORY, tenant, address, category))
    return _sign(secret, (_UNSUBSCRIBE, tenant, address))


def unsubscribe_signer(token: str) -> tuple[str, int] | None:
    """``(tenant, generation)`` an unsubscribe token claims to be signed by, read without verifying it (to
    pick the key that verifies it); None when it is no unsubscribe token at all."""
    fields = _fields(token)
    if fields is None:
        return None
    if fields[0] == _UNSUBSCRIBE_KEYED and len(fields) == 5 and fields[2].isdigit() and fields[2] != "0":
        return fields[1], int(fields[2])
    if fields[0] in (_UNSUBSCRIBE, _UNSUBSCRIBE_CATEGORY) and len(fields) > 1:
        return fields[1], 0
    return None


def verify_unsubscribe(
    secret: str | bytes, token: str, *, generations: Collection[int] = (0,)
) -> UnsubscribeTarget | None:
    """The tenant, address and category of an unsubscribe token signed with one of the tenant's keys of
    ``generations``, or None when it is not genuine (or signed with a key no longer accepted)."""
    signer = unsubscribe_signer(token)
    if signer is None or signer[1] not in generations:
        return None
    tenant, generation = signer
    if generation > 0:
        fields = _verify(unsubscribe_key(secret, tenant, generation), token, _UNSUBSCRIBE_KEYED, 5)
        if fields is None:
            return None
        category = None if fields[4] == _EVERY_CATEGORY else fields[4]
        return UnsubscribeTarget(tenant=fields[1], address=fields[3], category=category)
    fields = _verify(secret, token, _UNSUBSCRIBE_CATEGORY, 4)
    if fields is not None:
        return UnsubscribeTarget(tenant=fields[1], address=fields[2], category=fields[3])
    fields = _verify(secret, token, _UNSUBSCRIBE, 3)
    return None if fields is None else UnsubscribeTarget(tenant=fields[1], address=fields[2])


def click_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{CLICK_PATH}{token}"


def unsubscribe_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{UNSUBSCRIBE_PATH}{token}"


def open_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{OPEN_PATH}{token}{OPEN_SUFFIX}"


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the link secret is empty")
    return key


def _sign(secret: str | bytes, fields: tuple[str, ...]) -> str:
    if not all(fields) or any(_CONTROL.search(f) for f in fields):
        raise ValueError("link token fields must be non-empty and free of control characters")
    payload = _SEP.join(fields).encode()
    tag = hmac.new(_key(secret), payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode("ascii")


def _fields(token: str) -> list[str] | None:
    """A token's fields, unverified."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return raw[:-_TAG_BYTES].decode().split(_SEP) if len(raw) > _TAG_BYTES else None
    except (binascii.Error, ValueError):
        return None


def _verify(secret: str | bytes, token: str, kind: str, count: int) -> list[str] | None:
    key = _key(secret)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # Only the canonical spelling is accepted: base64 leaves spare bits in the last character.
    if len(raw) <= _TAG_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        return None
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        return None
    try:
        fields = payload.decode().split(_SEP)
    except UnicodeDecodeError:
        return None
    if len(fields) != count or fields[0] != kind:
        return None
    return fields
