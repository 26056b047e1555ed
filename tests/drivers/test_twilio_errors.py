"""Twilio's documented error codes -> Herald's failure classes (one table: drivers.sms.twilio)."""

from __future__ import annotations

import pytest

from drivers.sms.twilio import TWILIO_ERRORS, classify
from engine.errors import FailureClass, RetryableError

F = FailureClass


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, 21211, F.BAD_RECIPIENT),  # invalid To
        (400, 21614, F.BAD_RECIPIENT),  # landline
        (400, 21612, F.BAD_RECIPIENT),
        (400, 21610, F.BAD_RECIPIENT),  # unsubscribed (STOP)
        (429, 20429, F.THROTTLED),
        (401, 20003, F.PROVIDER_DOWN),  # auth
        (400, 21606, F.PROVIDER_DOWN),  # From cannot send: every message would fail
        (400, 21608, F.PERMANENT),
        (400, 21408, F.PERMANENT),
        (400, 63016, F.PERMANENT),  # WhatsApp outside the window
        (429, 63018, F.THROTTLED),
        (400, 30001, F.RETRYABLE),
        # unknown codes fall back to the HTTP status
        (429, 99999, F.THROTTLED),
        (401, 99999, F.PROVIDER_DOWN),
        (503, 99999, F.RETRYABLE),
        (400, 99999, F.PERMANENT),
    ],
)
def test_classification(status: int, code: int, expected: FailureClass) -> None:
    err = classify(status, {"code": code, "message": "x", "status": status}, None)
    assert err.failure_class is expected
    assert (err.provider, err.code, err.status_code) == ("twilio", str(code), status)


def test_throttle_uses_retry_after_or_a_default() -> None:
    err = classify(429, {"code": 20429, "message": "Too Many Requests"}, 7.0)
    assert isinstance(err, RetryableError) and err.retry_after_s == 7.0
    err = classify(429, {"code": 20429, "message": "Too Many Requests"}, None)
    assert isinstance(err, RetryableError) and err.retry_after_s and err.retry_after_s > 0


def test_rfc9457_body_and_no_body() -> None:
    err = classify(400, {"type": "x", "title": "t", "status": 400, "code": 21211, "detail": "bad To"}, None)
    assert err.failure_class is F.BAD_RECIPIENT and err.detail == "bad To"
    assert classify(502, None, None).failure_class is F.RETRYABLE


def test_detail_never_quotes_the_number() -> None:
    err = classify(400, {"code": 21211, "message": "The 'To' number +14155552671 is not a valid phone number."}, None)
    assert "4155552671" not in err.detail and err.code == "21211"


def test_every_issue_code_is_in_the_table() -> None:
    assert {21211, 21614, 21610, 20429, 20003} <= set(TWILIO_ERRORS)
