"""SES events through SNS: signatures v1 and v2 against a signing certificate served by a stub (and by
moto's own SNS signer), the documented SES samples, forgeries, replays and untrusted certificate URLs."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from drivers.email._sns import SnsVerifier, fetch_certificate
from drivers.email.ses_webhooks import SesWebhook, to_events
from engine.feedback.effects import SuppressionScope, apply_events, suppression_for
from engine.feedback.events import (
    BounceKind,
    EventType,
    RejectReason,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookReplayError,
    WebhookUpstreamError,
)
from engine.states import Status

SAMPLES = Path(__file__).parent / "samples"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-12345abcde.pem"
HERALD_ID = "msg_0190a1b2c3d4e5f60718293a4b5c6d7e"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return loaded


_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Sns:
    """Plays SNS: an RSA key, its certificate served at CERT_URL, and the signing rule of the docs."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self.key = key or _KEY
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.pem

    def sign(self, doc: dict[str, Any], version: str = "2", *, at: datetime | None = None) -> bytes:
        doc = {**doc, "SignatureVersion": version, "SigningCertURL": CERT_URL}
        doc["Timestamp"] = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if doc["Type"] == "Notification":
            keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        text = "".join(f"{k}\n{doc[k]}\n" for k in keys if k in doc)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        doc["Signature"] = base64.b64encode(self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)).decode()
        return json.dumps(doc).encode()

    def notification(self, ses_event: dict[str, Any], version: str = "2", **kw: Any) -> bytes:
        envelope = sample("ses_envelope_delivery")
        envelope["Message"] = json.dumps(ses_event) + "\n"
        return self.sign(envelope, version, **kw)


@pytest.fixture
def sns() -> Sns:
    return Sns()


@pytest.fixture
def webhook(sns: Sns) -> SesWebhook:
    return SesWebhook(SnsVerifier(fetch=sns.fetch))


class TestVerify:
    @pytest.mark.parametrize("version", ["1", "2"])
    async def test_the_documented_delivery_envelope(self, sns: Sns, webhook: SesWebhook, version: str) -> None:
        body = sns.sign(sample("ses_envelope_delivery"), version)
        received = await webhook.receive(body, {"x-amz-sns-message-type": "Notification"})
        (event,) = received.events
        assert event.type is EventType.DELIVERED
        assert event.provider_message_id == "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000"
        assert event.recipient == "jane@example.com"
        assert event.description == "250 ok:  Message 64111812 accepted"
        assert event.occurred_at == datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC)
        assert received.sns_message_id == "19ba9823-d7f2-53c1-860e-cb10e0d13dfc"

    async def test_the_certificate_is_fetched_once(self, sns: Sns, webhook: SesWebhook) -> None:
        for _ in range(3):
            await webhook.receive(sns.sign(sample("ses_envelope_delivery")))
        assert sns.fetched == [CERT_URL]

    async def test_subscription_confirmation_returns_the_url_to_confirm(self, sns: Sns, webhook: SesWebhook) -> None:
        received = await webhook.receive(sns.sign(sample("ses_subscription_confirmation"), "1"))
        assert received.events == ()
        assert received.subscribe_url == (
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription"
            "&TopicArn=arn:aws:sns:us-west-2:123456789012:SES_Notifications&Token=EXAMPLE_TOKEN"
        )

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda d: d.update(Message=d["Message"].replace("Delivery", "Bounce")),
            lambda d: d.update(MessageId="another-id"),
            lambda d: d.update(TopicArn="arn:aws:sns:us-east-1:999999999999:Theirs"),
            lambda d: d.update(Signature=base64.b64encode(b"x" * 256).decode()),
            lambda d: d.update(Signature="%%%"),
            lambda d: d.update(SignatureVersion="1"),  # signed as v2, claims v1
            lambda d: d.update(SignatureVersion="3"),
        ],
    )
    async def test_forgeries_are_403(
        self, sns: Sns, webhook: SesWebhook, tamper: Callable[[dict[str, Any]], None]
    ) -> None:
        doc = json.loads(sns.sign(sample("ses_envelope_delivery"), "2"))
        tamper(doc)
        with pytest.raises(WebhookAuthError) as caught:
            await webhook.receive(json.dumps(doc).encode())
        assert caught.value.status_code == 403

    async def test_a_key_other_than_the_certificate_s_is_refused(self, sns: Sns) -> None:
        impostor = Sns(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        with pytest.raises(WebhookAuthError):
            await SesWebhook(SnsVerifier(fetch=sns.fetch)).receive(impostor.sign(sample("ses_envelope_delivery")))

    @pytest.mark.parametrize(
        "url",
        [
            "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-12345abcde.pem",
            "https://evil.example/SimpleNotificationService-12345abcde.pem",
            "https://sns.us-east-1.amazonaws.com/other.pem",
            "https://169.254.169.254/latest/meta-data/",
        ],
    )
    async def test_untrusted_certificate_urls_are_never_fetched(self, sns: Sns, webhook: SesWebhook, url: str) -> None:
        doc = json.loads(sns.sign(sample("ses_envelope_delivery")))
        doc["SigningCertURL"] = url
        with pytest.raises(WebhookAuthError, match="SigningCertURL"):
            await webhook.receive(json.dumps(doc).encode())
        assert sns.fetched == []

    async def test_an_emulator_certificate_host_can_be_allowed(self, sns: Sns) -> None:
        doc = json.loads(sns.sign(sample("ses_envelope_delivery")))
        doc["SigningCertURL"] = "http://127.0.0.1:5000/SimpleNotificationService-ab.pem"
        webhook = SesWebhook.from_env(
            {"HERALD_SES_SNS_CERT_URL_PATTERN": r"^http://127\.0\.0\.1:\d+/.+\.pem$"}, fetch=sns.fetch
        )
        assert len((await webhook.receive(json.dumps(doc).encode())).events) == 1

    async def test_stale_messages_are_replays(self, sns: Sns, webhook: SesWebhook) -> None:
        body = sns.sign(sample("ses_envelope_delivery"), at=datetime.now(UTC) - timedelta(minutes=6))
        with pytest.raises(WebhookReplayError):
            await webhook.receive(body)

    async def test_only_our_topics_when_configured(self, sns: Sns) -> None:
        ours = SesWebhook.from_env(
            {"HERALD_SES_SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:SES_Events, arn:x"}, fetch=sns.fetch
        )
        await ours.receive(sns.sign(sample("ses_envelope_delivery")))
        doc = sample("ses_envelope_delivery")
        doc["TopicArn"] = "arn:aws:sns:us-east-1:999999999999:SomeoneElses"
        with pytest.raises(WebhookAuthError, match="topic"):
            await ours.receive(sns.sign(doc))

    async def test_a_subscribe_url_elsewhere_is_refused(self, sns: Sns, webhook: SesWebhook) -> None:
        doc = sample("ses_subscription_confirmation")
        doc["SubscribeURL"] = "https://evil.example/?Action=ConfirmSubscription"
        with pytest.raises(WebhookAuthError, match="SubscribeURL"):
            await webhook.receive(sns.sign(doc))

    @pytest.mark.parametrize(
        ("body", "headers"),
        [
            (b"not json", {}),
            (b'{"Type": "Other"}', {}),
            (b'{"Type": "Notification", "MessageId": "x"}', {}),
            (
                json.dumps(sample("ses_envelope_delivery")).encode(),
                {"x-amz-sns-message-type": "SubscriptionConfirmation"},
            ),
        ],
    )
    async def test_malformed_bodies_are_400(self, webhook: SesWebhook, body: bytes, headers: dict[str, str]) -> None:
        with pytest.raises(WebhookPayloadError):
            await webhook.receive(body, headers)

    async def test_a_certificate_that_cannot_be_fetched_is_502(self, sns: Sns) -> None:
        async def down(url: str) -> bytes:
            raise WebhookUpstreamError("connection refused")

        async def garbage(url: str) -> bytes:
            return b"<html>not a certificate</html>"

        for fetch in (down, garbage):
            with pytest.raises(WebhookUpstreamError) as caught:
                await SesWebhook(SnsVerifier(fetch=fetch)).receive(sns.sign(sample("ses_envelope_delivery")))
            assert caught.value.status_code == 502

    async def test_moto_signed_notifications_verify(self) -> None:
        """moto's SNS signs the way AWS documents; our verifier accepts what it produces."""
        from moto import mock_aws
        from moto.core import DEFAULT_ACCOUNT_ID

        with mock_aws():
            from moto.sns.models import Subscription, sns_backends

            backend = sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
            topic = backend.create_topic("ses-events")
            subscription = Subscription(DEFAULT_ACCOUNT_ID, topic, "https://hooks.example.com/ses", "https")
            message = json.dumps(sample("ses_bounce_permanent"))
            post = subscription.get_post_data(message, "6c2f3b1e-moto", None)
            pem = backend._message_public_keys[post["SigningCertURL"].rsplit("/", 1)[1]]

        async def fetch(url: str) -> bytes:
            return pem.encode() if isinstance(pem, str) else pem

        received = await SesWebhook(SnsVerifier(fetch=fetch)).receive(json.dumps(post).encode())
        (event,) = received.events
        assert (event.type, event.bounce_kind) == (EventType.BOUNCED, BounceKind.HARD)
        post["Message"] = post["Message"].replace("Permanent", "Transient")
        with pytest.raises(WebhookAuthError):
            await SesWebhook(SnsVerifier(fetch=fetch)).receive(json.dumps(post).encode())


NOW = datetime(2024, 5, 2, tzinfo=UTC)


class TestEvents:
    def test_permanent_bounce(self) -> None:
        (event,) = to_events(sample("ses_bounce_permanent"), NOW)
        assert (event.type, event.bounce_kind, event.recipient) == (
            EventType.BOUNCED,
            BounceKind.HARD,
            "jane@example.com",
        )
        assert event.error_code == "5.1.1"
        assert event.description == "smtp; 550 5.1.1 <jane@example.com>... User unknown"
        assert event.occurred_at == datetime(2016, 1, 27, 14, 59, 44, 101000, tzinfo=UTC)
        assert suppression_for(event) is SuppressionScope.ALL
        assert apply_events(Status.DELIVERED, [event]).after is Status.BOUNCED  # asynchronous bounce

    def test_transient_bounce_is_an_event_only_and_names_herald_s_message(self) -> None:
        doc = sample("ses_bounce_transient")
        doc["mail"]["tags"]["herald_message_id"] = [HERALD_ID]
        (event,) = to_events(doc, NOW)
        assert (event.bounce_kind, event.reject_reason) == (BounceKind.SOFT, RejectReason.UNREACHABLE)
        assert event.message_id == HERALD_ID
        assert suppression_for(event) is None
        assert apply_events(Status.SENT, [event]).after is Status.SENT

    def test_complaint(self) -> None:
        (event,) = to_events(sample("ses_complaint"), NOW)
        assert (event.type, event.recipient, event.description) == (
            EventType.COMPLAINED,
            "richard@example.com",
            "abuse",
        )
        assert suppression_for(event) is SuppressionScope.ALL
        doc = sample("ses_complaint")
        doc["complaint"]["complaintFeedbackType"] = "not-spam"
        assert to_events(doc, NOW)[0].type is EventType.UNKNOWN

    def test_open_and_click(self) -> None:
        (opened,) = to_events(sample("ses_open"), NOW)
        assert (opened.type, opened.recipient) == (EventType.OPENED, "recipient@example.com")
        assert opened.user_agent and "iPhone" in opened.user_agent
        (clicked,) = to_events(sample("ses_click"), NOW)
        assert (clicked.type, clicked.url) == (
            EventType.CLICKED,
            "https://docs.aws.amazon.com/ses/latest/DeveloperGuide/",
        )
        assert clicked.dedupe_key != opened.dedupe_key

    def test_one_event_per_recipient(self) -> None:
        doc = sample("ses_bounce_permanent")
        doc["bounce"]["bouncedRecipients"].append({"emailAddress": "Mary@Example.com", "status": "5.1.1"})
        events = to_events(doc, NOW)
        assert [e.recipient for e in events] == ["jane@example.com", "mary@example.com"]
        assert len({e.dedupe_key for e in events}) == 2

    @pytest.mark.parametrize(
        ("doc", "kind", "reason"),
        [
            ({"eventType": "Send", "send": {}}, EventType.QUEUED, None),
            ({"eventType": "Reject", "reject": {"reason": "Bad content"}}, EventType.DROPPED, RejectReason.CONTENT),
            (
                {
                    "eventType": "Rendering Failure",
                    "failure": {"errorMessage": "Attribute missing", "templateName": "T"},
                },
                EventType.FAILED,
                RejectReason.CONTENT,
            ),
            (
                {
                    "eventType": "DeliveryDelay",
                    "deliveryDelay": {
                        "delayType": "MailboxFull",
                        "timestamp": "2024-05-02T10:00:00.000Z",
                        "delayedRecipients": [{"emailAddress": "jane@example.com", "status": "4.2.2"}],
                    },
                },
                EventType.DEFERRED,
                None,
            ),
            ({"eventType": "Subscription", "subscription": {}}, EventType.UNKNOWN, None),
        ],
    )
    def test_other_event_types(self, doc: dict[str, Any], kind: EventType, reason: RejectReason | None) -> None:
        mail = {"messageId": "0100-x-000000", "destination": ["jane@example.com"], "timestamp": "2024-05-02T09:00:00Z"}
        (event,) = to_events({**doc, "mail": mail}, NOW)
        assert (event.type, event.reject_reason, event.recipient) == (kind, reason, "jane@example.com")
        assert event.provider_message_id == "0100-x-000000"

    def test_both_dialects_of_one_event_share_a_dedupe_key(self) -> None:
        identity = sample("ses_bounce_permanent")
        published = {**identity, "eventType": "Bounce"}
        del published["notificationType"]
        assert to_events(identity, NOW)[0].dedupe_key == to_events(published, NOW)[0].dedupe_key

    async def test_the_topic_validation_notice_is_no_event(self, sns: Sns, webhook: SesWebhook) -> None:
        envelope = sample("ses_envelope_delivery")
        envelope["Message"] = "Successfully validated SNS topic for Amazon SES event publishing."
        assert (await webhook.receive(sns.sign(envelope))).events == ()


async def test_the_default_fetcher_reads_a_certificate_and_reports_failures_as_502(sns: Sns) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        found = request.startswith(b"GET /SimpleNotificationService-ab.pem ")
        status, payload = (b"200 OK", sns.pem) if found else (b"404 Not Found", b"")
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(payload))
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await fetch_certificate(f"http://127.0.0.1:{port}/SimpleNotificationService-ab.pem") == sns.pem
        with pytest.raises(WebhookUpstreamError, match="404"):
            await fetch_certificate(f"http://127.0.0.1:{port}/missing.pem")
    finally:
        server.close()
        await server.wait_closed()
    with pytest.raises(WebhookUpstreamError, match="could not be fetched"):
        await fetch_certificate(f"http://127.0.0.1:{port}/SimpleNotificationService-ab.pem")
