"""Standard Webhooks signatures on outgoing deliveries, against the specification's test vector."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from engine.feedback.signing import SignatureMismatch, WebhookSigner, new_secret, verify

#: The specification's published test vector.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_reproduces_the_specification_vector() -> None:
    headers = WebhookSigner([SPEC_SECRET]).headers(SPEC_ID, SPEC_BODY, timestamp=SPEC_TS)
    assert headers == {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS), "webhook-signature": SPEC_SIGNATURE}
    verify(SPEC_BODY, headers, SPEC_SECRET, now=SPEC_TS + 10)


def test_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    new, old = new_secret(), SPEC_SECRET
    headers = WebhookSigner([new, old]).headers(SPEC_ID, SPEC_BODY, timestamp=SPEC_TS)
    parts = headers["webhook-signature"].split(" ")
    assert len(parts) == 2 and parts[1] == SPEC_SIGNATURE and parts[0].startswith("v1,")
    for secret in (new, old):
        verify(SPEC_BODY, headers, secret, now=SPEC_TS)
    with pytest.raises(SignatureMismatch, match="no signature"):
        verify(SPEC_BODY, headers, new_secret(), now=SPEC_TS)


def test_receivers_using_the_reference_library_accept_our_deliveries() -> None:
    body = json.dumps({"type": "NotificationDelivered", "message_id": "msg_1"}).encode()
    current, previous = new_secret(), new_secret()
    headers = WebhookSigner([current, previous]).headers("evt_1", body)
    for secret in (current, previous):
        assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b'{"test": 2432232315}'}, "no signature"),
        ({"webhook-id": "msg_other"}, "no signature"),
        ({"webhook-timestamp": str(SPEC_TS + 1)}, "no signature"),
        ({"webhook-signature": "v1,AAAA"}, "no signature"),
        ({"webhook-signature": ""}, "required"),
        ({"webhook-timestamp": "yesterday"}, "unix seconds"),
    ],
)
def test_forgeries_are_refused(change: dict[str, object], message: str) -> None:
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS), "webhook-signature": SPEC_SIGNATURE}
    body = change.pop("body", SPEC_BODY)
    headers.update(change)  # type: ignore[arg-type]
    with pytest.raises(SignatureMismatch, match=message):
        verify(body, headers, SPEC_SECRET, now=SPEC_TS)  # type: ignore[arg-type]


def test_a_stale_delivery_is_refused() -> None:
    headers = WebhookSigner([SPEC_SECRET]).headers(SPEC_ID, SPEC_BODY, timestamp=SPEC_TS)
    with pytest.raises(SignatureMismatch, match="tolerance"):
        verify(SPEC_BODY, headers, SPEC_SECRET, now=SPEC_TS + 301)


def test_new_secrets_are_random_and_in_the_whsec_form() -> None:
    one, two = new_secret(), new_secret()
    assert one != two and one.startswith("whsec_")
    WebhookSigner([one]).headers("m", b"{}", timestamp=int(time.time()))


@pytest.mark.parametrize("bad", [[], ["not-a-secret"], ["whsec_%%%"], ["whsec_"]])
def test_bad_secrets_are_refused(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        WebhookSigner(bad)


def test_signature_depends_on_the_timestamp_in_utc() -> None:
    signer = WebhookSigner([SPEC_SECRET])
    when = int(datetime(2021, 2, 25, 15, 2, 10, tzinfo=UTC).timestamp())
    assert when == SPEC_TS
    assert signer.signature(SPEC_ID, when, SPEC_BODY) == SPEC_SIGNATURE
