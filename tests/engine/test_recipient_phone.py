"""``to.phone`` is checked against the numbering plans at admission, not by its shape alone."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.models import NotificationRequest


def request(phone: str) -> NotificationRequest:
    return NotificationRequest.model_validate(
        {"channel": "sms", "template_id": "otp_login", "to": {"phone": phone}, "variables": {"code": "1"}}
    )


def phone_error(phone: str) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        request(phone)
    errors = caught.value.errors(include_url=False)
    assert [e["loc"] for e in errors] == [("to", "phone")], errors
    return errors[0]


@pytest.mark.parametrize(
    ("given", "e164"),
    [
        ("+14155550123", "+14155550123"),
        ("+1 (415) 555-0142", "+14155550142"),
        ("+44 20 7946 0123", "+442079460123"),
        ("+44 7911 123456", "+447911123456"),
        ("+49 170 1234567", "+491701234567"),
        ("+91 98123 45678", "+919812345678"),
    ],
)
def test_valid_numbers_are_kept_in_e164(given: str, e164: str) -> None:
    assert request(given).to.phone == e164


@pytest.mark.parametrize(
    ("phone", "why"),
    [
        ("+447700900123", "not in a range assigned to any line (+44, GB)"),  # Ofcom's drama range for mobiles
        ("+15558675310", "not in a range assigned to any line (+1, US)"),
        ("+4479111", "too short for a +44 number"),
        ("+8801234", "too short for a +880 number"),
        ("+800123456789", "too long for a +800 number"),
        ("+999123456789", "no country has this calling code"),
    ],
)
def test_numbers_no_provider_would_take_are_refused_saying_why(phone: str, why: str) -> None:
    error = phone_error(phone)
    assert error["type"] == "phone_invalid"
    assert why in error["msg"]
    assert phone.lstrip("+") not in error["msg"]  # the number itself is personal data: never echoed


@pytest.mark.parametrize("phone", ["447911123456", "+44 7911 ext 1", "+0123456789", "+1415555012345678", ""])
def test_numbers_not_in_e164_form_are_refused(phone: str) -> None:
    error = phone_error(phone)
    assert error["type"] == "phone_format" and "E.164" in error["msg"]
