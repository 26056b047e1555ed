"""Recipients' rules as pure functions: inbound keywords, preferences, suppression scopes."""

from __future__ import annotations

import pytest

from engine.channels import Channel
from engine.governance.recipients import (
    NON_REQUIRED,
    Keyword,
    inbound_keyword,
    preference_allows,
    suppression_applies,
)

REQUIRED = ("auth", "transactional")


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("STOP", Keyword.STOP),
        (" stop ", Keyword.STOP),
        ("Stop.", Keyword.STOP),
        ("STOPALL", Keyword.STOP),
        ("stop all", Keyword.STOP),
        ("UNSUBSCRIBE", Keyword.STOP),
        ("cancel", Keyword.STOP),
        ("End", Keyword.STOP),
        ("QUIT", Keyword.STOP),
        ("opt-out", Keyword.STOP),
        ("OPT OUT", Keyword.STOP),
        ("optout", Keyword.STOP),
        ("REVOKE", Keyword.STOP),
        ("Arrêt", Keyword.STOP),
        ("START", Keyword.START),
        ("unstop", Keyword.START),
        ("Yes!", Keyword.START),
        ("opt in", Keyword.START),
        ("HELP", Keyword.HELP),
        ("info?", Keyword.HELP),
        ("stop sending me these", None),
        ("please stop", None),
        ("S T O P", None),
        ("", None),
        (None, None),
        ("stop" * 20, None),
    ],
)
def test_inbound_keywords(text: str | None, keyword: Keyword | None) -> None:
    assert inbound_keyword(text) is keyword


def test_preferences_stop_only_what_they_name_and_never_a_required_category() -> None:
    prefs = {"marketing": {"email": False, "sms": True}, "auth": {"sms": False}}
    assert not preference_allows(prefs, "marketing", Channel.EMAIL, REQUIRED)
    assert preference_allows(prefs, "marketing", Channel.SMS, REQUIRED)
    assert preference_allows(prefs, "marketing", Channel.PUSH, REQUIRED)  # not said: allowed
    assert preference_allows(prefs, "news", Channel.EMAIL, REQUIRED)
    assert preference_allows(prefs, "auth", Channel.SMS, REQUIRED)  # a required category always goes
    assert preference_allows(prefs, None, Channel.EMAIL, REQUIRED)  # no category: nothing to opt out of


@pytest.mark.parametrize(
    ("entry", "message", "stops"),
    [
        (None, "auth", True),  # a dead address: every category
        (None, None, True),
        ("marketing", "marketing", True),
        ("marketing", "auth", False),  # an unsubscribe from marketing leaves one-time codes flowing
        ("marketing", None, False),
        (NON_REQUIRED, "marketing", True),  # STOP
        (NON_REQUIRED, None, True),
        (NON_REQUIRED, "auth", False),
        (NON_REQUIRED, "transactional", False),
    ],
)
def test_suppression_scopes(entry: str | None, message: str | None, stops: bool) -> None:
    assert suppression_applies(entry, message, REQUIRED) is stops
