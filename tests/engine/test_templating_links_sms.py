"""Signed link tokens (clicks, unsubscribes) and SMS encoding / segment counting."""

from __future__ import annotations

import base64

import pytest

from engine.templating import (
    LinkTarget,
    SmsInfo,
    UnsubscribeTarget,
    sign_link,
    sign_unsubscribe,
    sms_segments,
    verify_link,
    verify_unsubscribe,
)

SECRET = "k" * 32
URL = "https://shop.example.com/p?id=42&utm_source=herald"


class TestLinkTokens:
    def test_round_trip(self) -> None:
        token = sign_link(SECRET, "t_001", "msg_0192", URL, index=3)
        assert verify_link(SECRET, token) == LinkTarget("t_001", "msg_0192", URL, 3)
        assert verify_link(SECRET.encode(), token) is not None

    def test_compact_url_safe(self) -> None:
        token = sign_link(SECRET, "t_001", "msg_0192", URL)
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        payload = len("c1 t_001 msg_0192 0 ") + len(URL) + 16  # fields, separators, 128-bit tag
        assert len(token) == -(-payload * 4 // 3)

    def test_deterministic_and_index_bound(self) -> None:
        assert sign_link(SECRET, "t", "m", URL) == sign_link(SECRET, "t", "m", URL)
        assert sign_link(SECRET, "t", "m", URL, index=0) != sign_link(SECRET, "t", "m", URL, index=1)

    def test_every_flipped_byte_is_rejected(self) -> None:
        token = sign_link(SECRET, "t_001", "msg_0192", URL)
        raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        for i in range(len(raw)):
            tampered = bytearray(raw)
            tampered[i] ^= 0x01
            forged = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
            assert verify_link(SECRET, forged) is None, i

    @pytest.mark.parametrize("token", ["", "x", "!!!!", "A" * 10, "A" * 200])
    def test_garbage_is_none(self, token: str) -> None:
        assert verify_link(SECRET, token) is None

    def test_wrong_secret_and_truncation(self) -> None:
        token = sign_link(SECRET, "t_001", "msg_0192", URL)
        assert verify_link("other-secret", token) is None
        assert verify_link(SECRET, token[:-2]) is None

    def test_kinds_do_not_mix(self) -> None:
        assert verify_unsubscribe(SECRET, sign_link(SECRET, "t", "m", URL)) is None
        assert verify_link(SECRET, sign_unsubscribe(SECRET, "t", "a@b.co")) is None

    def test_unsubscribe_round_trip(self) -> None:
        token = sign_unsubscribe(SECRET, "t_001", "ana@example.com")
        assert verify_unsubscribe(SECRET, token) == UnsubscribeTarget("t_001", "ana@example.com")
        assert verify_unsubscribe(SECRET, token[:-1] + ("A" if token[-1] != "A" else "B")) is None

    def test_refuses_empty_secret_and_control_characters(self) -> None:
        with pytest.raises(ValueError, match="secret"):
            sign_link("", "t", "m", URL)
        with pytest.raises(ValueError, match="control characters"):
            sign_link(SECRET, "t\x1fevil", "m", URL)


GSM_EXT = "€[]{}^~|\\\f"


class TestSmsSegments:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", SmsInfo("GSM-7", 0, 0)),
            ("a" * 160, SmsInfo("GSM-7", 160, 1)),
            ("a" * 161, SmsInfo("GSM-7", 161, 2)),
            ("a" * 306, SmsInfo("GSM-7", 306, 2)),
            ("a" * 307, SmsInfo("GSM-7", 307, 3)),
            ("€", SmsInfo("GSM-7", 2, 1)),
            ("€" + "a" * 158, SmsInfo("GSM-7", 160, 1)),
            ("€" + "a" * 159, SmsInfo("GSM-7", 161, 2)),
            ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà\n\r", SmsInfo("GSM-7", 64, 1)),
            ("ж" * 70, SmsInfo("UCS-2", 70, 1)),
            ("ж" * 71, SmsInfo("UCS-2", 71, 2)),
            ("ж" * 134, SmsInfo("UCS-2", 134, 2)),
            ("ж" * 135, SmsInfo("UCS-2", 135, 3)),
            ("😀", SmsInfo("UCS-2", 2, 1)),
            ("😀" * 35, SmsInfo("UCS-2", 70, 1)),
            ("a" * 69 + "😀", SmsInfo("UCS-2", 71, 2)),
            ("café — ok", SmsInfo("UCS-2", 9, 1)),
        ],
    )
    def test_vectors(self, text: str, expected: SmsInfo) -> None:
        assert sms_segments(text) == expected

    def test_every_extension_character_counts_two(self) -> None:
        info = sms_segments(GSM_EXT)
        assert (info.encoding, info.characters) == ("GSM-7", 2 * len(GSM_EXT))

    def test_escape_pairs_are_not_split_across_parts(self) -> None:
        # 152 plain septets then a euro: the pair moves whole to part 2 (152 + 2 > 153).
        assert sms_segments("a" * 152 + "€" + "a" * 151).segments == 2
        assert sms_segments("a" * 152 + "€" + "a" * 152).segments == 3

    def test_surrogate_pairs_are_not_split_across_parts(self) -> None:
        assert sms_segments("a" * 66 + "😀" + "a" * 65).segments == 2
        assert sms_segments("a" * 66 + "😀" + "a" * 66).segments == 3


def test_unsubscribe_links_of_a_tenant_key_generation() -> None:
    from engine.templating.links import unsubscribe_signer

    token = sign_unsubscribe(SECRET, "t_001", "ana@example.com", category="marketing", generation=3)
    assert unsubscribe_signer(token) == ("t_001", 3)
    assert verify_unsubscribe(SECRET, token) is None  # generation 0 only, by default
    assert verify_unsubscribe(SECRET, token, generations={2, 3}) == UnsubscribeTarget(
        "t_001", "ana@example.com", "marketing"
    )
    every = sign_unsubscribe(SECRET, "t_001", "ana@example.com", generation=1)
    assert verify_unsubscribe(SECRET, every, generations={1}) == UnsubscribeTarget("t_001", "ana@example.com")
    # Another tenant's key, or the same payload claiming another generation, never verifies.
    forged = sign_unsubscribe(SECRET, "t_002", "ana@example.com", generation=3)
    assert verify_unsubscribe(SECRET, forged, generations={3}).tenant == "t_002"
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    moved = raw.replace(b"\x1f3\x1f", b"\x1f2\x1f")
    moved_token = base64.urlsafe_b64encode(moved).rstrip(b"=").decode()
    assert unsubscribe_signer(moved_token) == ("t_001", 2)
    assert verify_unsubscribe(SECRET, moved_token, generations={2, 3}) is None
    legacy = sign_unsubscribe(SECRET, "t_001", "ana@example.com")
    assert unsubscribe_signer(legacy) == ("t_001", 0)
    assert verify_unsubscribe(SECRET, legacy, generations={1, 2}) is None  # rotated away from
