"""Standard Webhooks signatures on the events Herald delivers (https://www.standardwebhooks.com).

Each delivery carries ``webhook-id`` (the same on every retry of it), ``webhook-timestamp`` (unix seconds)
and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` under a secret written
``whsec_<base64 key>``. While a secret is being rotated both the new and the previous one sign, and the
header lists both signatures separated by a space, so a receiver holding either one accepts the delivery.
The HMAC itself is the ``standardwebhooks`` package's.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
#: Bytes of key material in a generated secret (the spec asks for 24 to 64).
SECRET_BYTES = 32
#: How far a receiver lets ``webhook-timestamp`` stray from its clock (the spec's suggestion).
DEFAULT_TOLERANCE_S = 300


class SignatureMismatch(Exception):
    """A delivery whose signature, id or timestamp does not check out."""


def new_secret() -> str:
    """A fresh signing secret in the ``whsec_`` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _webhook(secret: str) -> Webhook:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret looks like whsec_<base64>")
    key = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    if not key:
        raise ValueError("a signing secret looks like whsec_<base64>")
    try:
        base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a signing secret looks like whsec_<base64>") from None
    return Webhook(secret)


class WebhookSigner:
    """Signs outgoing deliveries with one or more secrets (the current first, then the previous one
    while it is still within its rotation window).

    Raises:
        ValueError: no secret, or one not in the ``whsec_`` form.
    """

    def __init__(self, signing_secrets: Sequence[str]) -> None:
        if not signing_secrets:
            raise ValueError("at least one signing secret is needed")
        self._hooks = tuple(_webhook(s) for s in signing_secrets)

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` header value: one ``v1,<sig>`` per secret, space-separated."""
        when = datetime.fromtimestamp(timestamp, tz=UTC)
        text = body.decode()
        return " ".join(hook.sign(msg_id, when, text) for hook in self._hooks)

    def headers(self, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """The three headers of a delivery of ``body`` (UTF-8 JSON) with id ``msg_id``."""
        ts = int(time.time()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": self.signature(msg_id, ts, body),
        }


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Check a delivery as a receiver would: the headers are there, the timestamp is fresh, and one of
    the ``v1`` signatures is ours (compared in constant time).

    Raises:
        SignatureMismatch: what is wrong, without echoing any secret.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, offered = (lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and offered):
        raise SignatureMismatch("webhook-id, webhook-timestamp and webhook-signature are required")
    try:
        ts = int(stamp)
    except ValueError:
        raise SignatureMismatch("webhook-timestamp is not unix seconds") from None
    clock = time.time() if now is None else now
    if abs(clock - ts) > tolerance_s:
        raise SignatureMismatch("webhook-timestamp is outside the tolerance window")
    expected = WebhookSigner([secret]).signature(msg_id, ts, body).encode()
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in offered.split(" ")):
        raise SignatureMismatch("no signature matches")
