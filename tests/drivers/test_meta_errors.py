"""Meta Graph error codes -> Herald's failure classes (one table: drivers.whatsapp.meta)."""

from __future__ import annotations

import pytest

from drivers.whatsapp.meta import classify
from engine.errors import FailureClass, RetryableError

F = FailureClass


def body(code: int, message: str = "x") -> dict[str, object]:
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "A",
        }
    }


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, 130429, F.THROTTLED),  # throughput
        (400, 131056, F.THROTTLED),  # pair rate limit
        (400, 80007, F.THROTTLED),
        (400, 4, F.THROTTLED),
        (400, 131048, F.PERMANENT),  # spam rate limit: do not retry
        (401, 190, F.PROVIDER_DOWN),  # token expired
        (403, 10, F.PROVIDER_DOWN),
        (403, 200, F.PROVIDER_DOWN),  # permissions range
        (400, 131031, F.PROVIDER_DOWN),  # account locked
        (400, 131047, F.PERMANENT),  # re-engagement window
        (404, 132001, F.PERMANENT),  # template missing / not approved
        (400, 132000, F.PERMANENT),
        (400, 132015, F.PERMANENT),  # template paused
        (400, 131026, F.BAD_RECIPIENT),  # not on WhatsApp
        (400, 131050, F.BAD_RECIPIENT),  # stopped marketing messages
        (500, 131000, F.RETRYABLE),
        (503, 131016, F.RETRYABLE),
        (400, 131049, F.RETRYABLE),  # Meta chose not to deliver: much later
        (429, 999999, F.THROTTLED),
        (500, 999999, F.RETRYABLE),
        (400, 999999, F.PERMANENT),
    ],
)
def test_classification(status: int, code: int, expected: FailureClass) -> None:
    err = classify(status, body(code))
    assert err.failure_class is expected
    assert (err.provider, err.code, err.status_code) == ("meta", str(code), status)


def test_throttles_carry_a_retry_after() -> None:
    err = classify(400, body(131056))
    assert isinstance(err, RetryableError) and err.retry_after_s == 6.0
    later = classify(400, body(131049))
    assert isinstance(later, RetryableError) and later.retry_after_s and later.retry_after_s >= 3600


def test_detail_never_quotes_the_number() -> None:
    err = classify(400, body(131030, "Recipient phone number 14155552671 not in allowed list"))
    assert "4155552671" not in err.detail
