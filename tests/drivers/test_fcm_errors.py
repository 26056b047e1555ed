"""FCM error codes -> Herald's failure classes (one table: drivers.push.fcm)."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.push.fcm import classify
from engine.errors import FailureClass, RetryableError

F = FailureClass
FCM = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def body(status: int, rpc: str, code: str | None, field: str | None = None, message: str = "x") -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if code:
        details.append({"@type": FCM, "errorCode": code})
    if field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": field}]})
    return {"error": {"code": status, "message": message, "status": rpc, "details": details}}


@pytest.mark.parametrize(
    ("status", "rpc", "code", "field", "expected"),
    [
        (404, "NOT_FOUND", "UNREGISTERED", None, F.BAD_RECIPIENT),
        (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.token", F.BAD_RECIPIENT),
        (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.android.ttl", F.PERMANENT),
        (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", None, F.BAD_RECIPIENT),
        (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", None, F.THROTTLED),
        (503, "UNAVAILABLE", "UNAVAILABLE", None, F.RETRYABLE),
        (500, "INTERNAL", "INTERNAL", None, F.RETRYABLE),
        (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", None, F.PROVIDER_DOWN),
        (401, "UNAUTHENTICATED", "APNS_AUTH_ERROR", None, F.PROVIDER_DOWN),
        (401, "UNAUTHENTICATED", None, None, F.PROVIDER_DOWN),
        (403, "PERMISSION_DENIED", None, None, F.PROVIDER_DOWN),
        (502, "", None, None, F.RETRYABLE),
    ],
)
def test_classification(status: int, rpc: str, code: str | None, field: str | None, expected: FailureClass) -> None:
    err = classify(status, body(status, rpc, code, field), None)
    assert err.failure_class is expected
    assert err.provider == "fcm" and err.status_code == status


def test_retry_after_is_honoured_with_defaults() -> None:
    quota = classify(429, body(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), None)
    assert isinstance(quota, RetryableError) and quota.retry_after_s == 60.0
    unavailable = classify(503, body(503, "UNAVAILABLE", "UNAVAILABLE"), 12.0)
    assert isinstance(unavailable, RetryableError) and unavailable.retry_after_s == 12.0
