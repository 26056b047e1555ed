"""Meta WhatsApp webhooks: the verification handshake, X-Hub-Signature-256 on the documented vector and
samples, forgeries, and the status mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from drivers.whatsapp.meta_webhooks import SIGNATURE_HEADER, MetaWebhookVerifier, parse_statuses
from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.feedback.effects import apply_events, suppression_for
from engine.feedback.events import EventType, RejectReason, WebhookAuthError, WebhookPayloadError
from engine.states import Status

SAMPLES = Path(__file__).parent / "samples"
SECRET = "test_app_secret"
VECTOR_BODY = b'{"object":"whatsapp_business_account","entry":[]}'
VECTOR_SIGNATURE = "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756"


def body(name: str) -> bytes:
    return (SAMPLES / f"meta_{name}.json").read_bytes()


def signed(raw: bytes, secret: str = SECRET) -> dict[str, str]:
    return {SIGNATURE_HEADER: "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()}


@pytest.fixture
def verifier() -> MetaWebhookVerifier:
    return MetaWebhookVerifier(SECRET, "our-verify-token")


class TestHandshake:
    def test_answers_the_challenge(self, verifier: MetaWebhookVerifier) -> None:
        query = {"hub.mode": "subscribe", "hub.verify_token": "our-verify-token", "hub.challenge": "1158201444"}
        assert verifier.handshake(query) == "1158201444"

    @pytest.mark.parametrize(
        "query",
        [
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
            {"hub.mode": "unsubscribe", "hub.verify_token": "our-verify-token", "hub.challenge": "1"},
            {"hub.mode": "subscribe", "hub.verify_token": "our-verify-token"},
            {},
        ],
    )
    def test_refuses_anything_else(self, verifier: MetaWebhookVerifier, query: dict[str, str]) -> None:
        with pytest.raises(WebhookAuthError) as caught:
            verifier.handshake(query)
        assert caught.value.status_code == 403

    def test_without_a_verify_token_nothing_is_answered(self) -> None:
        query = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
        with pytest.raises(WebhookAuthError, match="HERALD_META_VERIFY_TOKEN"):
            MetaWebhookVerifier(SECRET).handshake(query)


class TestSignature:
    def test_the_documented_vector(self, verifier: MetaWebhookVerifier) -> None:
        verifier.verify(VECTOR_BODY, {SIGNATURE_HEADER: VECTOR_SIGNATURE})
        verifier.verify(VECTOR_BODY, {SIGNATURE_HEADER.lower(): VECTOR_SIGNATURE.upper().replace("SHA256", "sha256")})

    @pytest.mark.parametrize("name", ["delivered", "sent", "failed"])
    def test_samples(self, verifier: MetaWebhookVerifier, name: str) -> None:
        verifier.verify(body(name), signed(body(name)))

    @pytest.mark.parametrize(
        ("raw", "headers"),
        [
            (VECTOR_BODY + b" ", {SIGNATURE_HEADER: VECTOR_SIGNATURE}),  # the raw bytes are signed
            (VECTOR_BODY, {SIGNATURE_HEADER: VECTOR_SIGNATURE.removeprefix("sha256=")}),  # no prefix
            (VECTOR_BODY, signed(VECTOR_BODY, "another-secret")),
            (body("delivered").replace(b"delivered", b"read"), signed(body("delivered"))),
        ],
    )
    def test_forgeries_are_403(self, verifier: MetaWebhookVerifier, raw: bytes, headers: dict[str, str]) -> None:
        with pytest.raises(WebhookAuthError) as caught:
            verifier.verify(raw, headers)
        assert caught.value.status_code == 403

    def test_missing_signature_is_401(self, verifier: MetaWebhookVerifier) -> None:
        with pytest.raises(WebhookAuthError) as caught:
            verifier.verify(VECTOR_BODY, {})
        assert caught.value.status_code == 401

    def test_a_missing_secret_names_the_setting(self) -> None:
        with pytest.raises(ConfigurationError, match="HERALD_META_APP_SECRET"):
            MetaWebhookVerifier.from_env({"HERALD_META_VERIFY_TOKEN": "x"})


class TestParse:
    def test_delivered(self) -> None:
        (event,) = parse_statuses(body("delivered"))
        assert (event.type, event.channel) == (EventType.DELIVERED, Channel.WHATSAPP)
        assert event.provider_message_id == "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
        assert event.recipient == "+16505551234"
        assert event.occurred_at.timestamp() == 1750030073
        assert event.dedupe_key == f"meta:{event.provider_message_id}:delivered"
        assert dict(event.raw)["pricing"]["pricing_model"] == "PMP"

    def test_sent_then_read_then_a_late_delivered(self) -> None:
        (sent,) = parse_statuses(body("sent"))
        read = parse_statuses(body("delivered").replace(b'"delivered"', b'"read"'))[0]
        late = parse_statuses(body("delivered"))[0]
        assert sent.type is EventType.SENT and read.type is EventType.READ
        after_read = apply_events(Status.SENT, [sent, read])
        assert after_read.after is Status.DELIVERED
        assert apply_events(after_read.after, [late]).after is Status.DELIVERED

    def test_failed(self) -> None:
        (event,) = parse_statuses(body("failed"))
        assert (event.type, event.error_code, event.description) == (
            EventType.FAILED,
            "131047",
            "Re-engagement message",
        )
        assert event.reject_reason is RejectReason.OTHER
        assert suppression_for(event) is None
        assert apply_events(Status.SENT, [event]).after is Status.FAILED

    def test_a_marketing_opt_out_is_a_category_unsubscribe(self) -> None:
        doc = json.loads(body("failed"))
        doc["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["code"] = 131050
        (event,) = parse_statuses(json.dumps(doc).encode())
        assert event.reject_reason is RejectReason.UNSUBSCRIBED
        assert suppression_for(event) is not None and suppression_for(event).value == "category"

    def test_several_statuses_in_one_post_and_messages_skipped(self) -> None:
        doc = json.loads(body("delivered"))
        value = doc["entry"][0]["changes"][0]["value"]
        value["statuses"].append({**value["statuses"][0], "status": "read", "timestamp": "1750030099"})
        value["messages"] = [{"from": "16505551234", "id": "wamid.in", "type": "text", "text": {"body": "hi"}}]
        doc["entry"].append({"id": "2", "changes": [{"field": "account_update", "value": {"event": "X"}}]})
        events = parse_statuses(json.dumps(doc).encode())
        assert [e.type for e in events] == [EventType.DELIVERED, EventType.READ]

    def test_the_vector_body_has_no_statuses(self) -> None:
        assert parse_statuses(VECTOR_BODY) == ()

    @pytest.mark.parametrize("raw", [b"nope", b"[]", b"\xff"])
    def test_malformed_bodies_are_400(self, raw: bytes) -> None:
        with pytest.raises(WebhookPayloadError):
            parse_statuses(raw)
