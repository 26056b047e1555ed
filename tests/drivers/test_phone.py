"""drivers/phone.py: E.164 validation, routing country, WhatsApp forms, SMS encoding and segments."""

from __future__ import annotations

import pickle

import pytest

from drivers.phone import (
    SmsSendResult,
    mask_phone,
    parse_phone,
    scrub_numbers,
    sms_encoding,
    sms_segments,
    whatsapp_address,
)
from engine.errors import BadRecipientError, FailureClass


@pytest.mark.parametrize(
    ("raw", "e164", "region", "cc"),
    [
        ("+14155552671", "+14155552671", "US", 1),
        ("+1 (415) 555-2671", "+14155552671", "US", 1),
        ("whatsapp:+447400123456", "+447400123456", "GB", 44),
        ("tel:+491701234567", "+491701234567", "DE", 49),
        ("+919812345678", "+919812345678", "IN", 91),
    ],
)
def test_parse_valid_numbers(raw: str, e164: str, region: str, cc: int) -> None:
    phone = parse_phone(raw)
    assert (phone.e164, phone.region, phone.country_code) == (e164, region, cc)


def test_national_number_needs_a_default_region() -> None:
    with pytest.raises(BadRecipientError):
        parse_phone("(415) 555-2671")
    assert parse_phone("(415) 555-2671", default_region="US").e164 == "+14155552671"


@pytest.mark.parametrize("raw", [None, "", "not a number", "+1555", "+15558675310", "+999123456789"])
def test_invalid_numbers_are_bad_recipients_without_the_number_in_the_detail(raw: str | None) -> None:
    with pytest.raises(BadRecipientError) as info:
        parse_phone(raw)
    assert info.value.failure_class is FailureClass.BAD_RECIPIENT
    assert info.value.code in ("invalid_number", "missing_number")
    if raw and any(ch.isdigit() for ch in raw):
        assert raw.lstrip("+") not in str(info.value)


def test_repr_masks_the_number() -> None:
    phone = parse_phone("+14155552671")
    assert "4155552671" not in repr(phone)
    assert mask_phone("+14155552671") == "+14*******71"


def test_whatsapp_address_forms() -> None:
    phone = parse_phone("+14155552671")
    assert whatsapp_address(phone, "twilio") == "whatsapp:+14155552671"
    assert whatsapp_address(phone, "meta") == "14155552671"
    with pytest.raises(ValueError):
        whatsapp_address(phone, "sns")


def test_scrub_numbers_in_provider_text() -> None:
    text = "The 'To' number +14155552671 is not valid; 4155552671 neither (code 21211, #131026)"
    scrubbed = scrub_numbers(text)
    assert "4155552671" not in scrubbed
    assert "21211" in scrubbed and "131026" in scrubbed


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 152 + "€", "GSM-7", 154, 1),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),
        ("é" * 70 + "ñÑüÜ", "GSM-7", 74, 1),  # in the GSM-7 default alphabet
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("ж" * 134, "UCS-2", 134, 2),
        ("ж" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # astral characters are surrogate pairs
        ("😀" * 36, "UCS-2", 72, 2),
    ],
)
def test_sms_segments(text: str, encoding: str, units: int, segments: int) -> None:
    parts = sms_segments(text)
    assert (parts.encoding, parts.units, parts.segments) == (encoding, units, segments)


def test_escape_pair_never_straddles_segments() -> None:
    # 152 plain + one 2-septet char: the pair does not fit in the first 153-septet part.
    assert sms_segments("a" * 152 + "€" + "a" * 153).segments == 3
    assert sms_encoding("Your code is 123456") == "GSM-7"
    assert sms_encoding("Код 123456") == "UCS-2"


def test_sms_result_carries_encoding_and_segments_and_pickles() -> None:
    result = SmsSendResult("msg_1", "twilio", provider_message_id="SM1", encoding="UCS-2", segments=2, country="US")
    clone = pickle.loads(pickle.dumps(result))
    assert clone == result and clone.ok
