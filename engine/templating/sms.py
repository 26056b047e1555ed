"""SMS encoding and segment counting (GSM 03.38 / UCS-2), as carriers bill them.

GSM-7: 160 septets in a single message, 153 per part once split (the user data header takes 7);
the extension characters ``€ [ ] { } ^ ~ | \\`` and form feed take two septets (escape + char).
UCS-2 (anything outside GSM-7): 70 UTF-16 code units single, 67 per part; an emoji outside the BMP
is a surrogate pair (2 units). A two-unit character is never split across parts, so packing is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

#: (single message, per part when split) capacity by encoding.
CAPACITY: dict[str, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True, slots=True)
class SmsInfo:
    """How a text goes over SMS. ``characters`` is in billing units: septets (GSM-7) or UTF-16 code
    units (UCS-2). An empty text has 0 segments."""

    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    segments: int


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _unit_costs(text: str, gsm: bool) -> list[int]:
    if gsm:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def sms_segments(text: str) -> SmsInfo:
    """Encoding, billed characters and segment count of ``text``."""
    gsm = is_gsm7(text)
    encoding: Literal["GSM-7", "UCS-2"] = "GSM-7" if gsm else "UCS-2"
    costs = _unit_costs(text, gsm)
    total = sum(costs)
    single, per_part = CAPACITY[encoding]
    if total == 0:
        return SmsInfo(encoding, 0, 0)
    if total <= single:
        return SmsInfo(encoding, total, 1)
    segments, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            segments, used = segments + 1, 0
        used += cost
    return SmsInfo(encoding, total, segments)
