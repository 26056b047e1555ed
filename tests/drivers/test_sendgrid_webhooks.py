"""SendGrid's signed Event Webhook: the documented vector, the documented sample batch, forgeries and
replays, cross-checked against the sendgrid package's own EventWebhook helper."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook

from drivers.email.sendgrid_webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendgridWebhookVerifier,
    parse_events,
)
from engine.errors import ConfigurationError
from engine.feedback.effects import SuppressionScope, apply_events, suppression_for
from engine.feedback.events import (
    BounceKind,
    EventType,
    RejectReason,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
)
from engine.states import Status

SAMPLE = (Path(__file__).parent / "samples" / "sendgrid_events.json").read_bytes()

#: providers.md section 2.4, the sendgrid-python test vector.
VECTOR_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpV"
    "KS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
VECTOR_TS = "1600112502"
VECTOR_SIGNATURE = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
VECTOR_BODY = (
    b'[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address","sg_event_id":'
    b'"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA","sg_message_id":'
    b'"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0","smtp-id":'
    b'"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]\r\n'
)


class Signer:
    """Plays SendGrid: a P-256 key, signing timestamp + body."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, ts: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if ts is None else ts)
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp}


def vector_headers(**change: str) -> dict[str, str]:
    return {SIGNATURE_HEADER: VECTOR_SIGNATURE, TIMESTAMP_HEADER: VECTOR_TS, **change}


class TestVerify:
    def test_the_documented_vector_verifies_here_and_in_the_sdk(self) -> None:
        verifier = SendgridWebhookVerifier(VECTOR_KEY, clock=lambda: float(VECTOR_TS) + 2)
        verifier.verify(VECTOR_BODY, vector_headers())
        sdk = EventWebhook(VECTOR_KEY)
        assert sdk.verify_signature(VECTOR_BODY.decode(), VECTOR_SIGNATURE, VECTOR_TS)

    def test_header_names_are_case_insensitive(self) -> None:
        verifier = SendgridWebhookVerifier(VECTOR_KEY, clock=lambda: float(VECTOR_TS))
        verifier.verify(VECTOR_BODY, {k.lower(): v for k, v in vector_headers().items()})

    def test_the_documented_vector_is_a_replay_today(self) -> None:
        with pytest.raises(WebhookReplayError):
            SendgridWebhookVerifier(VECTOR_KEY).verify(VECTOR_BODY, vector_headers())

    @pytest.mark.parametrize(
        ("body", "headers"),
        [
            (VECTOR_BODY.replace(b"Bounced Address", b"Invalid"), vector_headers()),  # body altered
            (VECTOR_BODY.rstrip(), vector_headers()),  # the exact bytes are signed, \r\n included
            (VECTOR_BODY, vector_headers(**{TIMESTAMP_HEADER: "1600112503"})),  # timestamp altered
            (VECTOR_BODY, vector_headers(**{SIGNATURE_HEADER: "bm90IGEgc2lnbmF0dXJl"})),
            (VECTOR_BODY, vector_headers(**{SIGNATURE_HEADER: "%%%"})),
        ],
    )
    def test_forgeries_are_403(self, body: bytes, headers: dict[str, str]) -> None:
        verifier = SendgridWebhookVerifier(VECTOR_KEY, clock=lambda: float(VECTOR_TS))
        with pytest.raises(WebhookAuthError) as caught:
            verifier.verify(body, headers)
        assert caught.value.status_code == 403
        assert not isinstance(caught.value, WebhookReplayError)

    def test_another_key_signature_is_refused(self) -> None:
        other = Signer()
        verifier = SendgridWebhookVerifier(VECTOR_KEY)
        with pytest.raises(WebhookAuthError):
            verifier.verify(SAMPLE, other.headers(SAMPLE))

    @pytest.mark.parametrize("missing", [SIGNATURE_HEADER, TIMESTAMP_HEADER])
    def test_missing_headers_are_401(self, missing: str) -> None:
        headers = vector_headers()
        del headers[missing]
        with pytest.raises(WebhookAuthError) as caught:
            SendgridWebhookVerifier(VECTOR_KEY).verify(VECTOR_BODY, headers)
        assert caught.value.status_code == 401

    @pytest.mark.parametrize("skew_s", [-301, 301])
    def test_stale_or_future_timestamps_are_replays(self, skew_s: int) -> None:
        signer = Signer()
        now = time.time()
        headers = signer.headers(SAMPLE, ts=int(now) + skew_s)
        with pytest.raises(WebhookReplayError) as caught:
            SendgridWebhookVerifier(signer.public_key, clock=lambda: now).verify(SAMPLE, headers)
        assert caught.value.status_code == 403
        SendgridWebhookVerifier(signer.public_key, clock=lambda: now, tolerance_s=600).verify(SAMPLE, headers)

    def test_our_signatures_agree_with_the_sdk(self) -> None:
        signer = Signer()
        headers = signer.headers(SAMPLE)
        SendgridWebhookVerifier(signer.public_key).verify(SAMPLE, headers)
        sdk = EventWebhook(signer.public_key)
        assert sdk.verify_signature(SAMPLE.decode(), headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER])
        forged = SAMPLE.replace(b"delivered", b"bounce", 1)
        assert not sdk.verify_signature(forged.decode(), headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER])
        with pytest.raises(WebhookAuthError):
            SendgridWebhookVerifier(signer.public_key).verify(forged, headers)

    @pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"garbage").decode()])
    def test_a_bad_key_names_the_setting(self, key: str) -> None:
        with pytest.raises(ConfigurationError, match="HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY"):
            SendgridWebhookVerifier.from_env({"HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY": key})

    def test_a_pem_key_is_accepted(self) -> None:
        pem = f"-----BEGIN PUBLIC KEY-----\n{VECTOR_KEY}\n-----END PUBLIC KEY-----\n"
        SendgridWebhookVerifier(pem, clock=lambda: float(VECTOR_TS)).verify(VECTOR_BODY, vector_headers())


class TestParse:
    def test_the_documented_sample_batch(self) -> None:
        events = parse_events(SAMPLE)
        assert [e.type for e in events] == [
            EventType.QUEUED,
            EventType.DEFERRED,
            EventType.DELIVERED,
            EventType.OPENED,
            EventType.CLICKED,
            EventType.BOUNCED,
            EventType.DROPPED,
            EventType.COMPLAINED,
            EventType.UNSUBSCRIBED,
        ]
        processed, deferred, delivered, opened, clicked, bounced, dropped, spam, unsubscribed = events
        assert {e.provider_message_id for e in events[:4]} == {"wrfRRvF7Q0GgwUo2CvDmEA"}  # X-Message-Id
        assert delivered.message_id is None  # ntf_ is not a Herald id
        assert delivered.dedupe_key == "sendgrid:nOSv8m0eTQ-vxvwNwt3fZQ"
        assert delivered.occurred_at.timestamp() == 1461095250
        assert delivered.recipient == "recipient@example.com"
        assert delivered.description.startswith("250 2.0.0 OK")
        assert opened.user_agent and "Firefox" in opened.user_agent
        assert clicked.url == "http://www.example.com"
        assert (bounced.bounce_kind, bounced.error_code) == (BounceKind.HARD, "5.1.1")
        assert dropped.reject_reason is RejectReason.BOUNCED
        assert deferred.description and "throttled" in deferred.description
        assert dict(processed.raw)["category"] == ["tag1", "tag2"]
        assert [suppression_for(e) for e in (bounced, dropped, spam, unsubscribed)] == [
            SuppressionScope.ALL,
            SuppressionScope.ALL,
            SuppressionScope.ALL,
            SuppressionScope.CATEGORY,
        ]
        assert {suppression_for(e) for e in (processed, deferred, delivered, opened, clicked)} == {None}

    def test_the_sample_drives_the_message_to_delivered(self) -> None:
        mine = [e for e in parse_events(SAMPLE) if e.provider_message_id == "wrfRRvF7Q0GgwUo2CvDmEA"]
        assert apply_events(Status.SENT, mine).after is Status.DELIVERED

    def test_herald_ids_come_back_through_custom_args(self) -> None:
        body = json.dumps(
            [{"event": "delivered", "sg_event_id": "e1", "timestamp": 1, "message_id": "msg_" + "a" * 32}]
        ).encode()
        assert parse_events(body)[0].message_id == "msg_" + "a" * 32

    @pytest.mark.parametrize(
        ("raw", "kind", "bounce", "reason"),
        [
            ({"event": "bounce", "type": "blocked"}, EventType.BOUNCED, BounceKind.SOFT, None),
            (
                {"event": "bounce", "type": "bounce", "bounce_classification": "Invalid Address"},
                EventType.BOUNCED,
                BounceKind.HARD,
                RejectReason.INVALID,
            ),
            ({"event": "dropped", "reason": "Invalid"}, EventType.DROPPED, None, RejectReason.INVALID),
            (
                {"event": "dropped", "reason": "Unsubscribed Address"},
                EventType.DROPPED,
                None,
                RejectReason.UNSUBSCRIBED,
            ),
            ({"event": "group_unsubscribe", "asm_group_id": 1}, EventType.UNSUBSCRIBED, None, None),
            ({"event": "group_resubscribe"}, EventType.UNKNOWN, None, None),
            ({"event": "something_new"}, EventType.UNKNOWN, None, None),
        ],
    )
    def test_mapping(self, raw: dict[str, object], kind: EventType, bounce: object, reason: object) -> None:
        (event,) = parse_events(json.dumps([{"sg_event_id": "x", "timestamp": 1, **raw}]).encode())
        assert (event.type, event.bounce_kind, event.reject_reason) == (kind, bounce, reason)

    def test_events_without_an_id_or_time_still_parse(self) -> None:
        (event,) = parse_events(b'[{"event": "delivered", "timestamp": "soon"}]')
        (again,) = parse_events(b'[{"event": "delivered", "timestamp": "soon"}]')
        assert event.dedupe_key == again.dedupe_key and event.dedupe_key.startswith("sendgrid:sha256:")
        assert event.occurred_at.tzinfo is not None

    @pytest.mark.parametrize("body", [b"not json", b'{"event": "delivered"}', b'["x"]', b"\xff"])
    def test_malformed_bodies_are_400(self, body: bytes) -> None:
        with pytest.raises(WebhookPayloadError) as caught:
            parse_events(body)
        assert caught.value.status_code == 400

    def test_a_batch_of_1000_is_one_call(self) -> None:
        template = json.loads(SAMPLE)
        batch = [{**template[i % len(template)], "sg_event_id": f"ev{i}"} for i in range(1000)]
        body = json.dumps(batch).encode()
        signer = Signer()
        started = time.perf_counter()
        SendgridWebhookVerifier(signer.public_key).verify(body, signer.headers(body))
        events = parse_events(body)
        elapsed_s = time.perf_counter() - started
        assert len(events) == 1000 and len({e.dedupe_key for e in events}) == 1000
        assert elapsed_s < 1.0, f"verify + parse of 1,000 events took {elapsed_s:.3f} s"
