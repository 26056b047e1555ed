"""A replica verifies each bearer token once and keeps its principal until the token expires."""

from __future__ import annotations

import time

import jwt
import pytest

from engine.auth import AUDIENCE, AuthError, Principal, VerifiedTokens, issue_token

SECRET = "verified-tokens-test-secret-0123456789"
OTHER = "another-test-secret-0123456789-abcdefgh"


def test_a_verified_token_is_answered_until_it_expires() -> None:
    exp = int(time.time()) + 60
    now = [float(exp - 30)]
    tokens = VerifiedTokens(SECRET, clock=lambda: now[0])
    token = jwt.encode({"tenant": "t_1", "scope": "send", "aud": AUDIENCE, "exp": exp}, SECRET)
    assert tokens.decode(token) == Principal("t_1", frozenset({"send"}))
    now[0] = float(exp)  # at exp the kept verdict no longer counts: the token is verified again
    seen = []
    tokens._secret = OTHER  # so a second verification shows (it fails with another secret)
    with pytest.raises(AuthError):
        seen.append(tokens.decode(token))
    assert not seen


def test_a_bad_token_is_refused_every_time() -> None:
    tokens = VerifiedTokens(SECRET, max_entries=1)
    forged = issue_token(OTHER, "t_1", scopes=("send",))
    for _ in range(2):
        with pytest.raises(AuthError):
            tokens.decode(forged)
    good = [issue_token(SECRET, f"t_{i}", scopes=("send",)) for i in range(3)]
    assert [tokens.decode(t).tenant for t in good] == [f"t_{i}" for i in range(3)]
