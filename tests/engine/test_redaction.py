"""Personal data and secrets never reach log output unmasked."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from engine.redaction import RedactingFilter, redact


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ("sending to ada.lovelace@example.com now", "ada.lovelace@example.com"),
        ("suppressed ünïcode@exämple.com", "ünïcode@exämple.com"),
        ("suppressed a@b.c", "a@b.c"),
        ("to <Grace.Hopper+otp@Mail.Example.CO.UK>", "Grace.Hopper+otp"),
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


def _stderr_of(code: str) -> str:
    """What a fresh interpreter prints to stderr running ``code``: its logging as the process sets it up."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return done.stderr


def test_a_process_without_handlers_warns_masked() -> None:
    # A Ray worker (sender, relay, feedback) configures no handler: its warnings go to logging.lastResort.
    err = _stderr_of(
        "import logging\n"
        "from engine import redaction\n"
        "redaction.install()\n"
        "logging.getLogger('engine.sender_loop').error('batch failed (%s)', 'Key (address)=(ada@example.com)')\n"
    )
    assert "a***@example.com" in err
    assert "ada@example.com" not in err


def test_configure_masks_and_quiets_per_request_libraries() -> None:
    code = (
        "import logging\n"
        "from engine import redaction\n"
        "redaction.configure('{level}')\n"
        "logging.getLogger('httpx').info('HTTP Request: POST http://127.0.0.1/ \"HTTP/1.1 200 OK\"')\n"
        "logging.getLogger('herald').info('sending to grace@example.com')\n"
    )
    err = _stderr_of(code.format(level="INFO"))
    assert "HTTP Request" not in err
    assert "herald: sending to g***@example.com" in err and "grace@example.com" not in err
    assert "HTTP Request" in _stderr_of(code.format(level="DEBUG"))
