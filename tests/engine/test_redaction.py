"""Personal data and secrets never reach log output unmasked."""

from __future__ import annotations

import logging

import pytest

from engine.redaction import RedactingFilter, redact


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ("sending to ada.lovelace@example.com now", "ada.lovelace@example.com"),
        ("sms to +14155550123 failed", "14155550123"),
        ("Authorization: Bearer abc.def-123", "abc.def-123"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnQiOiJ0In0.c2lnbmF0dXJl seen", "eyJhbGciOiJIUzI1NiJ9"),
        ("amqp://guest:hunter2@rabbit:5672/", "hunter2"),
        ('{"api_key": "SG.live-key-value"}', "SG.live-key-value"),
    ],
)
def test_masks(raw: str, secret: str) -> None:
    assert secret not in redact(raw)


def test_keeps_what_is_useful() -> None:
    out = redact("sent msg_01a2 to ada@example.com via ses")
    assert "msg_01a2" in out and "example.com" in out and "ses" in out


def test_filter_masks_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("herald.test.redaction")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.DEBUG):
        logger.debug("to %s", "grace@example.com")
        try:
            raise ValueError("bad number +14155550100")
        except ValueError:
            logger.exception("send failed")
    text = caplog.text
    assert "grace@example.com" not in text and "14155550100" not in text
    assert "g***@example.com" in text
