"""Phone numbers for the SMS and WhatsApp drivers: E.164 parsing, routing country, address forms, segments.

- :func:`parse_phone` validates with ``phonenumbers`` and returns the E.164 form plus the country (ISO
  3166 alpha-2 region and calling code) a router or price table needs. An invalid number is a
  :class:`~engine.errors.BadRecipientError` (so it is suppressed), whose detail never holds the number.
- :func:`whatsapp_address` gives each provider's WhatsApp form: ``whatsapp:+E164`` for Twilio, bare
  digits for Meta's Cloud API.
- :func:`sms_segments` counts GSM-7 septets (extension characters take two) or UCS-2 code units and the
  segments the carrier bills: 160/153 for GSM-7, 70/67 for UCS-2, never splitting an escape pair or a
  surrogate pair across two segments.
- :func:`sms_message` is what every SMS driver checks first: the number, a non-empty body, its segments.
- :class:`SmsSendResult` is a :class:`~engine.delivery.SendResult` that also carries encoding and segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers

from engine.delivery import OutboundMessage, SendResult
from engine.errors import BadRecipientError, PermanentError

#: Prefixes some callers put in front of a number (Twilio's channel address, RFC 3966).
_PREFIXES = ("whatsapp:", "tel:", "sms:")

# GSM 03.38 default alphabet (without the escape character 0x1B) and its extension table.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A validated number. ``repr`` masks it, so a stray log line does not leak it."""

    e164: str
    country_code: int  #: calling code, 1 for NANP
    region: str | None  #: ISO 3166 alpha-2 ("US", "GB"); None for non-geographic numbers

    def __repr__(self) -> str:
        return f"PhoneNumber({mask_phone(self.e164)!r}, region={self.region!r})"

    @property
    def digits(self) -> str:
        """The number without the leading ``+`` (Meta's WhatsApp form)."""
        return self.e164[1:]


def mask_phone(number: str) -> str:
    """Keep the first two and last two digits: ``+14155552671`` -> ``+14*******71``."""
    digits = number.lstrip("+")
    if len(digits) <= 4:
        return "+" + "*" * len(digits)
    return "+" + digits[:2] + "*" * (len(digits) - 4) + digits[-2:]


def parse_phone(raw: str | None, *, default_region: str | None = None) -> PhoneNumber:
    """Parse and validate a number; E.164 (``+`` and country code) unless ``default_region`` is given.

    Raises:
        BadRecipientError: missing, unparsable or not a valid number (``code="invalid_number"``).
    """
    if not raw:
        raise BadRecipientError("no phone number on the recipient", code="missing_number")
    text = raw.strip()
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as err:
        raise BadRecipientError(f"not an E.164 phone number ({err.error_type!r})", code="invalid_number") from err
    if not phonenumbers.is_valid_number(parsed):
        raise BadRecipientError(
            f"not a valid phone number for country code +{parsed.country_code}", code="invalid_number"
        )
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    region = phonenumbers.region_code_for_number(parsed)
    return PhoneNumber(e164=e164, country_code=parsed.country_code or 0, region=region if region != "001" else None)


def whatsapp_address(phone: PhoneNumber, provider: str) -> str:
    """The recipient form each WhatsApp provider expects.

    Raises:
        ValueError: an unknown provider (a programming error, not a send outcome).
    """
    if provider == "twilio":
        return f"whatsapp:{phone.e164}"
    if provider == "meta":
        return phone.digits
    raise ValueError(f"no WhatsApp address form for provider {provider!r}")


@dataclass(frozen=True, slots=True)
class SmsParts:
    encoding: Encoding
    units: int  #: GSM-7 septets or UTF-16 code units
    segments: int


def sms_encoding(text: str) -> Encoding:
    """GSM-7 when every character is in the default alphabet or its extension table, else UCS-2."""
    ok = all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in text)
    return "GSM-7" if ok else "UCS-2"


def sms_segments(text: str) -> SmsParts:
    """Encoding, length in units and billed segments of one SMS body (an empty body has none).

    Same rules as ``engine.templating.sms.sms_segments`` (which drivers may not import: layering).
    """
    encoding = sms_encoding(text)
    if encoding == "GSM-7":
        widths = [2 if ch in _GSM7_EXTENSION else 1 for ch in text]
        single, multi = 160, 153
    else:
        widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
        single, multi = 70, 67
    units = sum(widths)
    if units == 0:
        return SmsParts(encoding, 0, 0)
    if units <= single:
        return SmsParts(encoding, units, 1)
    segments, used = 1, 0
    for width in widths:  # an escape pair or surrogate pair never straddles two segments
        if used + width > multi:
            segments += 1
            used = 0
        used += width
    return SmsParts(encoding, units, segments)


def sms_message(message: OutboundMessage, provider: str) -> tuple[PhoneNumber, str, SmsParts]:
    """The validated recipient, the body and its segments of one SMS.

    Raises:
        BadRecipientError: the number is missing or invalid.
        PermanentError: the body is empty.
    """
    phone = parse_phone(message.to.phone)
    body = message.content.text or ""
    if not body.strip():
        raise PermanentError("empty SMS body", provider=provider, code="empty_body")
    return phone, body, sms_segments(body)


@dataclass(frozen=True, slots=True)
class SmsSendResult(SendResult):
    """A send result for SMS: what was billed, as the provider reported it or as counted here."""

    encoding: Encoding | None = None
    segments: int | None = None
    country: str | None = None  #: ISO region the number routed to


#: "+" and digits, or a bare run of at least nine digits/separators: a number quoted in provider text.
_NUMBER_RUN = re.compile(r"\+\d[\d \-().]{2,}\d|\d[\d \-().]{7,}\d")


def scrub_numbers(text: str) -> str:
    """Mask anything that looks like a phone number in provider text (error messages quote the ``To``)."""
    return _NUMBER_RUN.sub(lambda m: mask_phone("".join(ch for ch in m.group() if ch.isdigit())), text)
