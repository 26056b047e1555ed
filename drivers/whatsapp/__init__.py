"""WhatsApp drivers (Twilio, Meta Cloud API) and what they share: the template request.

A template message is first-class: the engine puts it in ``OutboundMessage.extra["whatsapp_template"]``::

    {"name": "order_shipped",            # Meta template name
     "language": "en_US",                # Meta language code
     "parameters": ["1234"],             # body parameters: a list (positional) or a dict (named)
     "buttons": [{"sub_type": "url", "index": 0, "text": "1234", "variable": 1}],
                                         # buttons that take a value; "variable": its Twilio Content number
     "components": [...],                # optional: Meta's raw components (header, buttons), used as-is
     "content_sid": "HX…",               # Twilio Content template (Twilio needs it; Meta ignores it)
     "category": "utility"}              # marketing | utility | authentication (what Meta bills by)

Without a template the driver sends ``content.text`` as a free-form text, which WhatsApp only delivers
inside the 24 h customer-service window (outside it: Meta 131047 / Twilio 63016, a permanent failure).

A one-time code goes as an *authentication* template: the code as the one body parameter and again as
the parameter of the copy-code button (Meta: a ``button`` component, ``sub_type`` ``url``, index 0;
Twilio's ``whatsapp/authentication`` content: one variable, the code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import PermanentError

TEMPLATE_KEY = "whatsapp_template"


#: Meta's parameter object for each button sub-type that takes a value.
_BUTTON_PARAMETER = {"url": "text", "quick_reply": "payload", "copy_code": "coupon_code"}


@dataclass(frozen=True, slots=True)
class TemplateButton:
    """A button component's value: ``sub_type`` (url, quick_reply, copy_code) at ``index``."""

    sub_type: str
    index: int
    text: str
    variable: int | None = None  #: its Twilio Content variable number

    @classmethod
    def from_raw(cls, raw: Any) -> TemplateButton:
        """Raises: PermanentError for a malformed button (this message cannot go as asked)."""
        if not isinstance(raw, Mapping) or raw.get("sub_type") not in _BUTTON_PARAMETER:
            raise PermanentError("whatsapp_template.buttons: each needs a sub_type", code="bad_template")
        index, variable = raw.get("index", 0), raw.get("variable")
        if not isinstance(index, int) or not (variable is None or isinstance(variable, int)):
            raise PermanentError("whatsapp_template.buttons: index and variable are numbers", code="bad_template")
        return cls(str(raw["sub_type"]), index, str(raw.get("text") or ""), variable)

    def meta_component(self) -> dict[str, Any]:
        kind = _BUTTON_PARAMETER[self.sub_type]
        return {
            "type": "button",
            "sub_type": self.sub_type,
            "index": str(self.index),
            "parameters": [{"type": kind, kind: self.text}],
        }


@dataclass(frozen=True, slots=True)
class WhatsappTemplate:
    name: str
    language: str
    parameters: tuple[str, ...] = ()
    named_parameters: Mapping[str, str] = field(default_factory=dict)
    buttons: tuple[TemplateButton, ...] = ()
    components: tuple[Mapping[str, Any], ...] | None = None
    content_sid: str | None = None
    category: str | None = None

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> WhatsappTemplate | None:
        """The template in ``extra``, or None for a free-form message.

        Raises:
            PermanentError: the template request is malformed (this message cannot go as asked).
        """
        raw = extra.get(TEMPLATE_KEY)
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise PermanentError("whatsapp_template must be an object", code="bad_template")
        name = str(raw.get("name") or raw.get("content_sid") or "")
        if not name:
            raise PermanentError("whatsapp_template needs a name (or content_sid)", code="bad_template")
        params = raw.get("parameters") or ()
        positional: tuple[str, ...] = ()
        named: dict[str, str] = {}
        if isinstance(params, Mapping):
            named = {str(k): str(v) for k, v in params.items()}
        elif isinstance(params, list | tuple):
            positional = tuple(str(p) for p in params)
        else:
            raise PermanentError("whatsapp_template.parameters must be a list or an object", code="bad_template")
        buttons = raw.get("buttons") or ()
        if not isinstance(buttons, list | tuple):
            raise PermanentError("whatsapp_template.buttons must be a list", code="bad_template")
        components = raw.get("components")
        return cls(
            name=name,
            language=str(raw.get("language") or "en_US"),
            parameters=positional,
            named_parameters=named,
            buttons=tuple(TemplateButton.from_raw(b) for b in buttons),
            components=tuple(components) if components else None,
            content_sid=raw.get("content_sid"),
            category=raw.get("category"),
        )

    def content_variables(self) -> dict[str, str]:
        """Twilio's ``ContentVariables``: ``{"1": …, "2": …}`` (body, then buttons) or the named ones."""
        if self.named_parameters:
            return dict(self.named_parameters)
        variables = {str(i): value for i, value in enumerate(self.parameters, start=1)}
        for button in self.buttons:
            if button.variable is not None:
                variables.setdefault(str(button.variable), button.text)
        return variables

    def meta_components(self) -> list[dict[str, Any]]:
        """Meta's ``template.components``: the raw ones if given, else the body's and the buttons'."""
        if self.components is not None:
            return [dict(c) for c in self.components]
        if self.named_parameters:
            params = [{"type": "text", "parameter_name": k, "text": v} for k, v in self.named_parameters.items()]
        else:
            params = [{"type": "text", "text": v} for v in self.parameters]
        body = [{"type": "body", "parameters": params}] if params else []
        return body + [b.meta_component() for b in self.buttons]
