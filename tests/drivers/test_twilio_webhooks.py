"""Twilio status callbacks (SMS and WhatsApp): X-Twilio-Signature on the documented vectors and
samples, cross-checked with the twilio package's RequestValidator; forgeries; the status mapping."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from drivers.sms.twilio_webhooks import (
    SIGNATURE_HEADER,
    TwilioWebhookVerifier,
    form_params,
    parse_status_callback,
    signature,
)
from drivers.whatsapp import twilio_webhooks as whatsapp
from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.feedback.effects import SuppressionScope, apply_events, suppression_for
from engine.feedback.events import EventType, RejectReason, WebhookAuthError, WebhookPayloadError
from engine.states import Status

TOKEN = "12345"
URL = "https://example.com/webhooks/twilio/status"

#: providers.md section 3.3, verbatim.
SMS_DELIVERED = (
    b"AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&ApiVersion=2010-04-01&From=%2B14155552345"
    b"&MessageSid=SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&MessageStatus=delivered&RawDlrDoneDate=2405021021"
    b"&SmsSid=SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&SmsStatus=delivered&To=%2B15558675310"
)
SMS_UNDELIVERED = (
    b"AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&ApiVersion=2010-04-01&ErrorCode=30003&From=%2B14155552345"
    b"&MessageSid=SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&MessageStatus=undelivered"
    b"&SmsSid=SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&SmsStatus=undelivered&To=%2B15558675310"
)
WA_READ = (
    b"AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&ApiVersion=2010-04-01&ChannelInstallSid=XEaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    b"&ChannelPrefix=whatsapp&ChannelToAddress=%2B15558675310&From=whatsapp%3A%2B14155238886"
    b"&MessageSid=SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb&MessageStatus=read&SmsSid=SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    b"&SmsStatus=read&StructuredMessage=false&To=whatsapp%3A%2B15558675310"
)
WA_FAILED = (
    b"AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&ApiVersion=2010-04-01&ChannelPrefix=whatsapp"
    b"&ChannelToAddress=%2B15558675310&ErrorCode=63016&From=whatsapp%3A%2B14155238886"
    b"&MessageSid=SMcccccccccccccccccccccccccccccccc&MessageStatus=failed&SmsSid=SMcccccccccccccccccccccccccccccccc"
    b"&SmsStatus=failed&To=whatsapp%3A%2B15558675310"
)
SAMPLES = [SMS_DELIVERED, SMS_UNDELIVERED, WA_READ, WA_FAILED]


def signed(body: bytes, url: str = URL, token: str = TOKEN) -> dict[str, str]:
    """The header as Twilio's own library computes it."""
    return {SIGNATURE_HEADER: RequestValidator(token).compute_signature(url, dict(form_params(body)))}


class TestSignature:
    def test_the_documented_vectors(self) -> None:
        url = "https://mycompany.com/myapp.php?foo=1&bar=2"
        call = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        assert signature(TOKEN, url, call) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        repeated = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
        assert signature(TOKEN, url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        assert signature(TOKEN, URL, form_params(SMS_UNDELIVERED)) == "+1NR/PzPIhENfd5ajdJf686KPlg="

    @pytest.mark.parametrize("body", SAMPLES)
    def test_samples_signed_by_the_sdk_verify(self, body: bytes) -> None:
        TwilioWebhookVerifier(TOKEN).verify(URL, body, signed(body))
        assert RequestValidator(TOKEN).validate(URL, dict(form_params(body)), signature(TOKEN, URL, form_params(body)))

    def test_the_url_with_or_without_its_default_port(self) -> None:
        verifier = TwilioWebhookVerifier(TOKEN)
        with_port = "https://example.com:443/webhooks/twilio/status"
        verifier.verify(URL, SMS_DELIVERED, signed(SMS_DELIVERED, with_port))
        verifier.verify(with_port, SMS_DELIVERED, signed(SMS_DELIVERED, URL))

    def test_the_query_string_is_signed(self) -> None:
        url = URL + "?herald_message_id=msg_" + "b" * 32
        verifier = TwilioWebhookVerifier(TOKEN)
        verifier.verify(url, SMS_DELIVERED, signed(SMS_DELIVERED, url))
        with pytest.raises(WebhookAuthError):
            verifier.verify(URL + "?herald_message_id=msg_" + "c" * 32, SMS_DELIVERED, signed(SMS_DELIVERED, url))

    @pytest.mark.parametrize(
        ("body", "url", "headers"),
        [
            (SMS_DELIVERED.replace(b"delivered", b"failed"), URL, signed(SMS_DELIVERED)),  # body altered
            (SMS_DELIVERED + b"&Extra=1", URL, signed(SMS_DELIVERED)),  # a parameter added
            (SMS_DELIVERED, "https://example.com/webhooks/sms/twilio", signed(SMS_DELIVERED)),  # another URL
            (SMS_DELIVERED, URL, signed(SMS_DELIVERED, token="another-token")),
            (SMS_DELIVERED, URL, {SIGNATURE_HEADER: "AAAA"}),
        ],
    )
    def test_forgeries_are_403(self, body: bytes, url: str, headers: dict[str, str]) -> None:
        with pytest.raises(WebhookAuthError) as caught:
            TwilioWebhookVerifier(TOKEN).verify(url, body, headers)
        assert caught.value.status_code == 403
        assert not RequestValidator(TOKEN).validate(url, dict(form_params(body)), headers[SIGNATURE_HEADER])

    def test_missing_signature_is_401(self) -> None:
        with pytest.raises(WebhookAuthError) as caught:
            TwilioWebhookVerifier(TOKEN).verify(URL, SMS_DELIVERED, {})
        assert caught.value.status_code == 401

    def test_a_missing_token_names_the_setting(self) -> None:
        with pytest.raises(ConfigurationError, match="HERALD_TWILIO_AUTH_TOKEN"):
            TwilioWebhookVerifier.from_env({})


class TestParse:
    def test_sms_delivered(self) -> None:
        (event,) = parse_status_callback(SMS_DELIVERED)
        assert (event.type, event.channel, event.provider_message_id) == (
            EventType.DELIVERED,
            Channel.SMS,
            "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        )
        assert event.recipient == "+15558675310"
        assert event.dedupe_key == "twilio:SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:delivered"
        assert dict(event.raw)["RawDlrDoneDate"] == "2405021021"
        assert apply_events(Status.SENT, [event]).after is Status.DELIVERED

    def test_sms_undelivered_handset_unreachable_fails_without_suppressing(self) -> None:
        (event,) = parse_status_callback(SMS_UNDELIVERED)
        assert (event.type, event.error_code, event.reject_reason) == (
            EventType.FAILED,
            "30003",
            RejectReason.UNREACHABLE,
        )
        assert suppression_for(event) is None
        assert apply_events(Status.SENT, [event]).after is Status.FAILED

    def test_whatsapp_read_and_failed(self) -> None:
        (read,) = whatsapp.parse_status_callback(WA_READ)
        assert (read.type, read.channel, read.recipient) == (EventType.READ, Channel.WHATSAPP, "+15558675310")
        assert apply_events(Status.SENT, [read]).after is Status.DELIVERED
        (failed,) = whatsapp.parse_status_callback(WA_FAILED)
        assert (failed.type, failed.error_code, failed.reject_reason) == (EventType.FAILED, "63016", RejectReason.OTHER)

    @pytest.mark.parametrize(
        ("code", "reason", "scope"),
        [
            ("21211", RejectReason.INVALID, SuppressionScope.ALL),
            ("30005", RejectReason.INVALID, SuppressionScope.ALL),
            ("30006", RejectReason.INVALID, SuppressionScope.ALL),
            ("21610", RejectReason.OPTED_OUT, SuppressionScope.ALL),
            ("30004", RejectReason.BLOCKED, None),
            ("30007", RejectReason.CONTENT, None),
            ("30008", RejectReason.OTHER, None),
        ],
    )
    def test_error_codes(self, code: str, reason: RejectReason, scope: SuppressionScope | None) -> None:
        body = SMS_UNDELIVERED.replace(b"ErrorCode=30003", f"ErrorCode={code}".encode())
        (event,) = parse_status_callback(body)
        assert (event.reject_reason, suppression_for(event)) == (reason, scope)

    def test_late_sent_after_delivered_is_an_event_only(self) -> None:
        (delivered,) = parse_status_callback(SMS_DELIVERED)
        (sent,) = parse_status_callback(SMS_DELIVERED.replace(b"=delivered", b"=sent"))
        assert sent.type is EventType.SENT and sent.dedupe_key != delivered.dedupe_key
        assert apply_events(Status.DELIVERED, [sent]).after is Status.DELIVERED

    def test_herald_id_from_the_signed_callback_url(self) -> None:
        url = URL + "?" + urlencode({"herald_message_id": "msg_" + "d" * 32})
        assert parse_status_callback(SMS_DELIVERED, url=url)[0].message_id == "msg_" + "d" * 32
        assert parse_status_callback(SMS_DELIVERED, url=URL)[0].message_id is None

    @pytest.mark.parametrize("status", ["receiving", "partially_delivered", "brand_new"])
    def test_unknown_statuses(self, status: str) -> None:
        body = SMS_DELIVERED.replace(b"MessageStatus=delivered", f"MessageStatus={status}".encode())
        assert parse_status_callback(body)[0].type is EventType.UNKNOWN

    @pytest.mark.parametrize("body", [b"To=%2B1555", b"\xff\xfe", b"a=1&&&"])
    def test_malformed_bodies_are_400(self, body: bytes) -> None:
        with pytest.raises(WebhookPayloadError):
            parse_status_callback(body)
