"""A manifest's ``whatsapp`` block: the pre-approved template a version goes as on WhatsApp.

Outside the 24 h service window WhatsApp delivers templates only, so a version that names one is sent as
that template, its values filled from the message's variables::

    whatsapp:
      template: otp_login              # the template's name at Meta
      language: en_GB                  # optional: else the message's locale (en-GB -> en_GB)
      category: authentication         # marketing | utility | authentication (the price estimate)
      parameters: [code]               # body parameters in order (declared variable names)
      buttons:                         # buttons that take a value, each a variable
        - {sub_type: url, parameter: code}
      content_sid: HX...               # the same template at Twilio (Content API)

A button is ``sub_type`` ``url`` (a URL button's suffix, and the copy-code button of an authentication
template: Meta creates those as ``otp`` buttons and sends them as ``url``), ``quick_reply`` (payload) or
``copy_code`` (a marketing template's coupon code), at ``index`` (default: its place in the list).
An ``authentication`` template has exactly one body parameter, the code, and its copy-code button at
index 0 carries the same code (Meta's one-time password templates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidManifest

BUTTON_SUB_TYPES = ("url", "quick_reply", "copy_code")
_KEYS = frozenset({"template", "language", "parameters", "buttons", "content_sid", "category"})
_BUTTON_KEYS = frozenset({"sub_type", "index", "parameter"})
#: Meta's template category a manifest category goes as when the block names none.
_DEFAULT_CATEGORY = {"auth": "authentication", "marketing": "marketing"}


@dataclass(frozen=True, slots=True)
class WhatsappButton:
    """A button component that takes a value: the variable ``parameter``."""

    sub_type: str
    index: int
    parameter: str


@dataclass(frozen=True, slots=True)
class WhatsappSpec:
    """The parsed block; :meth:`request` fills it in for one message."""

    template: str
    language: str | None = None
    parameters: tuple[str, ...] = ()
    buttons: tuple[WhatsappButton, ...] = ()
    content_sid: str | None = None
    category: str = "utility"

    def request(self, values: Mapping[str, Any], locale: str) -> dict[str, Any]:
        """What drivers read from ``OutboundMessage.extra["whatsapp_template"]`` (see ``drivers.whatsapp``).

        Each button also names its Twilio Content variable: body parameters are ``{{1}}``..``{{n}}``, a
        button repeating a body parameter shares its number (Twilio's authentication content has one
        variable, the code), any other takes the next free one.
        """
        numbers: dict[str, int] = {}
        for position, name in enumerate(self.parameters, start=1):
            numbers.setdefault(name, position)
        next_free = len(self.parameters) + 1
        buttons = []
        for button in self.buttons:
            if button.parameter not in numbers:
                numbers[button.parameter], next_free = next_free, next_free + 1
            text = str(values.get(button.parameter, ""))
            buttons.append(
                {
                    "sub_type": button.sub_type,
                    "index": button.index,
                    "text": text,
                    "variable": numbers[button.parameter],
                }
            )
        return {
            "name": self.template,
            "language": self.language or locale.replace("-", "_"),
            "parameters": [str(values.get(name, "")) for name in self.parameters],
            "buttons": buttons,
            "content_sid": self.content_sid,
            "category": self.category,
        }


def parse_whatsapp(where: str, doc: Any, declared: set[str], manifest_category: str) -> WhatsappSpec | None:
    """Validate a manifest's ``whatsapp`` block.

    Raises:
        InvalidManifest: the message names the manifest and the key at fault.
    """
    if doc is None:
        return None
    where = f"{where}: whatsapp"
    if not isinstance(doc, Mapping) or not isinstance(doc.get("template"), str) or not doc["template"]:
        raise InvalidManifest(f"{where} needs a template name")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise InvalidManifest(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    params = doc.get("parameters") or []
    if not isinstance(params, list) or not all(isinstance(p, str) and p in declared for p in params):
        raise InvalidManifest(f"{where}.parameters must list declared variable names")
    raw_buttons = doc.get("buttons") or []
    if not isinstance(raw_buttons, list):
        raise InvalidManifest(f"{where}.buttons must be a list")
    buttons = tuple(_button(where, i, item, declared) for i, item in enumerate(raw_buttons))
    if len({b.index for b in buttons}) != len(buttons):
        raise InvalidManifest(f"{where}.buttons: two buttons have the same index")
    spec = WhatsappSpec(
        template=doc["template"],
        language=_optional_str(where, doc, "language"),
        parameters=tuple(params),
        buttons=buttons,
        content_sid=_optional_str(where, doc, "content_sid"),
        category=(_optional_str(where, doc, "category") or _DEFAULT_CATEGORY.get(manifest_category, "utility")).lower(),
    )
    if spec.category == "authentication":
        _check_authentication(where, spec)
    return spec


def _button(where: str, position: int, item: Any, declared: set[str]) -> WhatsappButton:
    at = f"{where}.buttons[{position}]"
    if not isinstance(item, Mapping):
        raise InvalidManifest(f"{at} must be a mapping")
    unknown = sorted(set(item) - _BUTTON_KEYS)
    if unknown:
        raise InvalidManifest(f"{at}: unknown key(s) {', '.join(map(str, unknown))}")
    sub_type = item.get("sub_type")
    if sub_type not in BUTTON_SUB_TYPES:
        raise InvalidManifest(f"{at}.sub_type must be one of {', '.join(BUTTON_SUB_TYPES)}")
    index = item.get("index", position)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 9:
        raise InvalidManifest(f"{at}.index must be a whole number from 0 to 9")
    parameter = item.get("parameter")
    if not isinstance(parameter, str) or parameter not in declared:
        raise InvalidManifest(f"{at}.parameter must be a declared variable name")
    return WhatsappButton(sub_type=str(sub_type), index=index, parameter=parameter)


def _check_authentication(where: str, spec: WhatsappSpec) -> None:
    if len(spec.parameters) != 1:
        raise InvalidManifest(f"{where}: an authentication template takes one body parameter, the code")
    copy_code = WhatsappButton("url", 0, spec.parameters[0])
    if copy_code not in spec.buttons:
        raise InvalidManifest(
            f"{where}: an authentication template's copy-code button (sub_type url, index 0) carries the code: "
            f"add {{sub_type: url, parameter: {spec.parameters[0]}}} to buttons"
        )


def _optional_str(where: str, doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidManifest(f"{where}.{key} must be text")
    return value or None
