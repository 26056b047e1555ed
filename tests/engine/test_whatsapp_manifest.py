"""A manifest's ``whatsapp`` block: body parameters and buttons, Meta's authentication shape, the request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.channels import Channel
from engine.templating import TemplateCatalog
from engine.templating.errors import InvalidManifest
from engine.templating.manifest import Manifest
from engine.templating.whatsapp import WhatsappButton, WhatsappSpec

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
VARIABLES = [{"name": "code", "required": True}, {"name": "order"}, {"name": "token"}]


def manifest(whatsapp: Any, category: str = "transactional") -> Manifest:
    doc = {"category": category, "channels": ["whatsapp"], "variables": VARIABLES, "whatsapp": whatsapp}
    return Manifest.from_dict("t", 1, doc)


def test_the_shipped_otp_login_v4_is_a_whatsapp_authentication_template() -> None:
    catalog = TemplateCatalog(TEMPLATES)
    resolved = catalog.resolve("otp_login:v4", locale="en-GB", channel=Channel.WHATSAPP)
    v3 = catalog.resolve("otp_login:v3", locale="en", channel=Channel.EMAIL).manifest
    assert resolved.manifest.channels == (*v3.channels, Channel.WHATSAPP)
    assert resolved.manifest.category == "auth"
    spec = resolved.manifest.whatsapp
    assert spec is not None
    assert (spec.template, spec.category, spec.parameters) == ("otp_login", "authentication", ("code",))
    assert spec.buttons == (WhatsappButton("url", 0, "code"),)
    assert spec.content_sid and spec.content_sid.startswith("HX")
    assert spec.request({"code": "384921"}, "en-GB") == {
        "name": "otp_login",
        "language": "en_GB",
        "parameters": ["384921"],
        "buttons": [{"sub_type": "url", "index": 0, "text": "384921", "variable": 1}],
        "content_sid": spec.content_sid,
        "category": "authentication",
    }


def test_buttons_take_their_index_from_their_place_unless_given() -> None:
    spec = manifest(
        {
            "template": "order_update",
            "parameters": ["order", "code"],
            "buttons": [
                {"sub_type": "quick_reply", "parameter": "order"},
                {"sub_type": "url", "index": 3, "parameter": "token"},
            ],
        }
    ).whatsapp
    assert spec is not None and spec.category == "utility" and spec.language is None
    assert spec.buttons == (WhatsappButton("quick_reply", 0, "order"), WhatsappButton("url", 3, "token"))
    request = spec.request({"order": "A-1", "code": "9", "token": "tok"}, "de-DE")
    assert request["language"] == "de_DE" and request["parameters"] == ["A-1", "9"]
    # Twilio numbering: a button repeating a body parameter shares its number, a new one takes the next.
    assert [(b["text"], b["variable"]) for b in request["buttons"]] == [("A-1", 1), ("tok", 3)]


def test_a_block_without_buttons_reads_as_before() -> None:
    doc = {"template": "security_alert", "language": "en_GB", "parameters": ["order"], "content_sid": "HX1"}
    spec = manifest(doc).whatsapp
    assert spec == WhatsappSpec("security_alert", "en_GB", ("order",), (), "HX1", "utility")
    assert spec.request({"order": "7"}, "en")["buttons"] == []


def test_an_auth_manifest_defaults_its_whatsapp_category_to_authentication() -> None:
    doc = {"template": "otp", "parameters": ["code"], "buttons": [{"sub_type": "url", "parameter": "code"}]}
    spec = manifest(doc, category="auth").whatsapp
    assert spec is not None and spec.category == "authentication"


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"template": "x", "buttons": {"sub_type": "url"}}, "buttons must be a list"),
        ({"template": "x", "buttons": ["url"]}, r"buttons\[0\] must be a mapping"),
        ({"template": "x", "buttons": [{"sub_type": "call", "parameter": "code"}]}, "sub_type must be one of"),
        ({"template": "x", "buttons": [{"sub_type": "url", "parameter": "nope"}]}, "declared variable"),
        ({"template": "x", "buttons": [{"sub_type": "url", "index": 10, "parameter": "code"}]}, "index"),
        ({"template": "x", "buttons": [{"sub_type": "url", "index": "0", "parameter": "code"}]}, "index"),
        ({"template": "x", "buttons": [{"sub_type": "url", "parameter": "code", "text": "Copy"}]}, "unknown key"),
        (
            {
                "template": "x",
                "buttons": [
                    {"sub_type": "url", "parameter": "code"},
                    {"sub_type": "url", "index": 0, "parameter": "order"},
                ],
            },
            "same index",
        ),
        ({"template": "x", "category": "authentication", "parameters": ["code", "order"]}, "one body parameter"),
        ({"template": "x", "category": "authentication", "parameters": ["code"]}, "copy-code button"),
        (
            {
                "template": "x",
                "category": "authentication",
                "parameters": ["code"],
                "buttons": [{"sub_type": "url", "parameter": "order"}],
            },
            "copy-code button",
        ),
        ({"template": "x", "content_sid": 7}, "content_sid must be text"),
        ({"template": ""}, "needs a template name"),
        ({"template": "x", "colour": "red"}, "unknown key"),
    ],
)
def test_invalid_blocks_name_the_key(doc: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidManifest, match=says):
        manifest(doc)
