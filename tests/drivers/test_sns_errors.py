"""AWS error codes from SNS Publish -> Herald's failure classes (one table: drivers.sms.sns)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from drivers.sms.sns import classify
from engine.errors import FailureClass, RetryableError

F = FailureClass


def client_error(code: str, status: int, message: str = "x") -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Publish")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [
        (
            "InvalidParameter",
            400,
            "Invalid parameter: PhoneNumber Reason: +1555 is not valid",
            F.BAD_RECIPIENT,
        ),
        ("InvalidParameter", 400, "Phone number does not meet the E164 format", F.BAD_RECIPIENT),
        ("InvalidParameter", 400, "Invalid parameter: Message too long", F.PERMANENT),
        ("OptedOut", 400, "opted out", F.BAD_RECIPIENT),
        ("Throttled", 429, "Rate exceeded", F.THROTTLED),
        ("ThrottlingException", 400, "Rate exceeded", F.THROTTLED),
        ("InternalError", 500, "x", F.RETRYABLE),
        ("AuthorizationError", 403, "x", F.PROVIDER_DOWN),
        (
            "InvalidClientTokenId",
            403,
            "The security token included in the request is invalid.",
            F.PROVIDER_DOWN,
        ),
        ("SignatureDoesNotMatch", 403, "x", F.PROVIDER_DOWN),
        ("KMSAccessDenied", 400, "x", F.PROVIDER_DOWN),
        ("SomethingNew", 503, "x", F.RETRYABLE),
        ("SomethingNew", 403, "x", F.PROVIDER_DOWN),
        ("SomethingNew", 400, "x", F.PERMANENT),
    ],
)
def test_classification(code: str, status: int, message: str, expected: FailureClass) -> None:
    err = classify(client_error(code, status, message))
    assert err.failure_class is expected
    assert (err.provider, err.code) == ("sns", code)


def test_throttle_has_a_retry_after_and_numbers_are_scrubbed() -> None:
    err = classify(client_error("Throttled", 429))
    assert isinstance(err, RetryableError) and err.retry_after_s
    err = classify(client_error("InvalidParameter", 400, "Invalid parameter: PhoneNumber +14155552671"))
    assert "4155552671" not in err.detail
