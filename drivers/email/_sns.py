"""Amazon SNS HTTP(S) deliveries: the envelope, its signature, and the signing certificate.

SNS signs every message it POSTs (RSA PKCS#1 v1.5; ``SignatureVersion`` 1 = SHA1, 2 = SHA256) over
``Key\\nValue\\n`` pairs of fixed keys, and names the certificate to check it with in ``SigningCertURL``.
Anyone can put any URL there, so the certificate is fetched only from URLs matching an allow-listed
pattern (AWS's own ``https://sns.<region>.amazonaws.com/SimpleNotificationService-<hex>.pem`` by default;
an emulator serving its own certificate sets its pattern), and cached. A valid signature proves SNS
sent it, not that *our* topic did, so ``topic_arns`` (when set) limits which topics are accepted.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from engine.feedback.events import (
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
    WebhookUpstreamError,
    from_iso,
    get_header,
    json_body,
)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

#: Keys signed, in order, per message type (absent ones are skipped).
SIGNED_KEYS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    UNSUBSCRIBE_CONFIRMATION: ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

#: AWS's signing certificates (commercial and China partitions).
DEFAULT_CERT_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[0-9a-f]+\.pem$"
#: Where a SubscriptionConfirmation may send us to confirm.
DEFAULT_SUBSCRIBE_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\?"
DEFAULT_TOLERANCE_S = 300.0
#: A signing certificate is a couple of KiB; refuse to read more.
MAX_CERT_BYTES = 64 * 1024
CERT_CACHE_SIZE = 32

CertFetcher = Callable[[str], Awaitable[bytes]]


async def fetch_certificate(url: str) -> bytes:
    """GET a signing certificate (no redirects, small, quick).

    Raises:
        WebhookUpstreamError: it could not be fetched.
    """
    try:
        async with httpx.AsyncClient(timeout=5.0, follow_redirects=False, trust_env=False) as client:
            response = await client.get(url)
    except httpx.HTTPError as err:
        raise WebhookUpstreamError(f"the SNS signing certificate could not be fetched ({type(err).__name__})") from None
    if response.status_code != 200 or len(response.content) > MAX_CERT_BYTES:
        raise WebhookUpstreamError(f"the SNS signing certificate answered HTTP {response.status_code}")
    return response.content


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS delivery."""

    type: str  #: Notification | SubscriptionConfirmation | UnsubscribeConfirmation
    message_id: str
    topic_arn: str
    message: str  #: the payload (for SES, a JSON document as text)
    timestamp: datetime
    subject: str | None = None
    subscribe_url: str | None = None  #: GET it to confirm a SubscriptionConfirmation
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def string_to_sign(doc: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed, for a message of a known ``Type``."""
    keys = SIGNED_KEYS[str(doc["Type"])]
    return "".join(f"{k}\n{doc[k]}\n" for k in keys if doc.get(k) is not None).encode()


def parse_envelope(body: bytes) -> dict[str, Any]:
    """Raises: WebhookPayloadError: not an SNS JSON envelope."""
    doc = json_body(body)
    if not isinstance(doc, dict) or doc.get("Type") not in SIGNED_KEYS:
        raise WebhookPayloadError("the body is not an SNS message")
    required = ("MessageId", "TopicArn", "Message", "Timestamp", "Signature", "SigningCertURL")
    missing = [k for k in required if not doc.get(k)]
    if missing:
        raise WebhookPayloadError(f"the SNS message lacks {', '.join(missing)}")
    return doc


class SnsVerifier:
    """Verifies SNS deliveries: envelope, certificate origin, signature, freshness and topic."""

    def __init__(
        self,
        *,
        cert_url_pattern: str = DEFAULT_CERT_URL_PATTERN,
        subscribe_url_pattern: str = DEFAULT_SUBSCRIBE_URL_PATTERN,
        topic_arns: Collection[str] = (),
        fetch: CertFetcher = fetch_certificate,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cert_url = re.compile(cert_url_pattern)
        self._subscribe_url = re.compile(subscribe_url_pattern)
        self.topic_arns = frozenset(topic_arns)
        self._fetch = fetch
        self.tolerance_s = tolerance_s
        self.clock = clock
        self._keys: OrderedDict[str, tuple[rsa.RSAPublicKey, datetime]] = OrderedDict()  #: url -> key, expiry

    async def verify(self, body: bytes, headers: Mapping[str, str] | None = None) -> SnsMessage:
        """Raises:
        WebhookPayloadError: not an SNS message (400).
        WebhookAuthError: untrusted certificate URL, bad signature, or a topic not ours (403).
        WebhookReplayError: correctly signed but older than the tolerance window.
        WebhookUpstreamError: the certificate could not be fetched (502: SNS retries).
        """
        doc = parse_envelope(body)
        announced = get_header(headers or {}, "x-amz-sns-message-type")
        if announced is not None and announced != doc["Type"]:
            raise WebhookPayloadError("x-amz-sns-message-type does not match the message")
        if self.topic_arns and doc["TopicArn"] not in self.topic_arns:
            raise WebhookAuthError("the SNS topic is not one we subscribed to")
        algorithm = SIGNATURE_HASHES.get(str(doc.get("SignatureVersion")))
        if algorithm is None:
            raise WebhookAuthError("unknown SNS SignatureVersion")
        key = await self._public_key(str(doc["SigningCertURL"]))
        try:
            signature = base64.b64decode(str(doc["Signature"]), validate=True)
            key.verify(signature, string_to_sign(doc), padding.PKCS1v15(), algorithm())
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookAuthError("the SNS signature does not match") from None
        try:
            timestamp = from_iso(str(doc["Timestamp"]))
        except ValueError:
            raise WebhookPayloadError("the SNS Timestamp is not ISO 8601") from None
        if abs(self.clock() - timestamp.timestamp()) > self.tolerance_s:
            raise WebhookReplayError("the SNS message is older than the tolerance window")
        subscribe_url = doc.get("SubscribeURL")
        if doc["Type"] == SUBSCRIPTION_CONFIRMATION and not self._subscribe_url.match(str(subscribe_url or "")):
            raise WebhookAuthError("the SubscribeURL is not an SNS address")
        return SnsMessage(
            type=str(doc["Type"]),
            message_id=str(doc["MessageId"]),
            topic_arn=str(doc["TopicArn"]),
            message=str(doc["Message"]),
            timestamp=timestamp,
            subject=doc.get("Subject"),
            subscribe_url=str(subscribe_url) if subscribe_url else None,
            raw=doc,
        )

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        if not self._cert_url.match(url):
            raise WebhookAuthError("the SNS SigningCertURL is not a trusted address")
        now = datetime.fromtimestamp(self.clock(), UTC)
        cached = self._keys.get(url)
        if cached is not None and now <= cached[1]:
            self._keys.move_to_end(url)
            return cached[0]
        key, expires = _load_key(await self._fetch(url), now)
        self._keys[url] = (key, expires)
        if len(self._keys) > CERT_CACHE_SIZE:
            self._keys.popitem(last=False)
        return key


def _load_key(pem: bytes, now: datetime) -> tuple[rsa.RSAPublicKey, datetime]:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise WebhookUpstreamError("the SNS signing certificate is not a PEM certificate") from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise WebhookAuthError("the SNS signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookAuthError("the SNS signing certificate does not hold an RSA key")
    return key, cert.not_valid_after_utc
