"""The driver toolkit: the status ladder, Retry-After, transport errors and settings, each written once."""

from __future__ import annotations

import asyncio
import socket
from email.utils import formatdate

import aiosmtplib
import httpx
import pytest

from drivers.aws_client import BOTO_ERRORS
from drivers.email.smtp import SMTP_ERRORS
from drivers.http import HTTPX_ERRORS
from drivers.toolkit import OS_ERRORS, SettingsReader, TransportErrors, classified, kind_for_status, retry_after_s
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    FailureClass,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)

F = FailureClass


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, F.PROVIDER_DOWN),
        (403, F.PROVIDER_DOWN),
        (429, F.THROTTLED),
        (500, F.RETRYABLE),
        (503, F.RETRYABLE),
        (400, F.PERMANENT),
        (404, F.PERMANENT),
        (413, F.PERMANENT),
        (None, F.PERMANENT),
    ],
)
def test_status_ladder(status: int | None, expected: FailureClass) -> None:
    assert kind_for_status(status).failure_class is expected


def test_classified_uses_the_table_first_and_redacts() -> None:
    err = classified(
        BadRecipientError, provider="p", status=400, detail="no mailbox jane.doe@example.com " + "x" * 400, code="550"
    )
    assert isinstance(err, BadRecipientError) and (err.provider, err.code, err.status_code) == ("p", "550", 400)
    assert "jane.doe@example.com" not in err.detail and len(err.detail) <= 300
    assert classified(None, provider="p", status=502, detail="bad gateway").code == "502"


def test_throttle_pause_order_answer_then_table_then_default() -> None:
    def after(answer: float | None) -> float | None:
        err = classified(None, provider="p", status=429, detail="", retry_after_s=answer, throttle_after_s=9.0)
        assert isinstance(err, ThrottledError)
        return err.retry_after_s

    assert after(3.0) == 3.0
    assert after(None) == 9.0
    retry = classified(RetryableError, provider="p", status=503, detail="", throttle_after_s=9.0)
    assert isinstance(retry, RetryableError) and retry.retry_after_s is None  # only throttles get the default


def test_retry_after_delta_and_http_date() -> None:
    assert retry_after_s({"retry-after": "7"}) == 7.0
    assert retry_after_s(httpx.Headers({"Retry-After": " 2 "})) == 2.0
    now = 1_700_000_000.0
    assert retry_after_s({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30.0)
    assert retry_after_s({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


@pytest.mark.parametrize(
    ("errors", "before", "after"),
    [
        (OS_ERRORS, ConnectionRefusedError(), TimeoutError()),
        (OS_ERRORS, socket.gaierror(), ConnectionResetError()),
        (HTTPX_ERRORS, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")),
        (HTTPX_ERRORS, httpx.ConnectTimeout("slow connect"), httpx.RemoteProtocolError("closed")),
        (SMTP_ERRORS, aiosmtplib.SMTPConnectError("refused"), aiosmtplib.SMTPTimeoutError("slow")),
    ],
)
def test_one_answer_for_transport_errors(errors: TransportErrors, before: Exception, after: Exception) -> None:
    down = errors.translate(before, "p")
    assert isinstance(down, ProviderDownError) and down.code == "connect"  # nothing was sent: fail over
    unknown = errors.translate(after, "p")
    assert isinstance(unknown, RetryableError) and unknown.sent_maybe  # may have been sent: retry in place
    assert errors.translate(ValueError(), "p") is None


def test_botocore_transport_errors() -> None:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    assert isinstance(BOTO_ERRORS.translate(EndpointConnectionError(endpoint_url="x"), "ses"), ProviderDownError)
    assert isinstance(BOTO_ERRORS.translate(ConnectTimeoutError(endpoint_url="x"), "ses"), ProviderDownError)
    timed_out = BOTO_ERRORS.translate(ReadTimeoutError(endpoint_url="x"), "ses")
    assert isinstance(timed_out, RetryableError) and timed_out.sent_maybe


async def test_boundary_raises_from_the_original() -> None:
    with pytest.raises(ProviderDownError) as info, OS_ERRORS.boundary("p"):
        await asyncio.sleep(0)
        raise ConnectionRefusedError
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_settings_reader_names_the_variable() -> None:
    read = SettingsReader({"A": "x", "N": "1.5", "I": "7", "BAD": "many", "F": "yes", "U": "http://h/"})
    assert read.required("MISSING", "A") == "x" and read.optional("MISSING") is None
    assert read.number("N", 2.0) == 1.5 and read.number("MISSING", 2.0) == 2.0 and read.integer("I", 0) == 7
    assert read.flag("F") is True and read.flag("MISSING") is None and read.url("U", "") == "http://h"
    with pytest.raises(ConfigurationError, match=r"^X_REGION \(or AWS_REGION\) is not set$"):
        read.required("X_REGION", "AWS_REGION")
    for check in (lambda: read.number("BAD", 1), lambda: read.integer("BAD", 1), lambda: read.flag("BAD")):
        with pytest.raises(ConfigurationError, match="BAD"):
            check()
    with pytest.raises(ConfigurationError, match="A must be one of b, c"):
        read.choice("A", ("b", "c"), "b")
