"""WhatsApp drivers (Twilio, Meta Cloud API) and what they share: the template request.

A template message is first-class: the engine puts it in ``OutboundMessage.extra["whatsapp_template"]``::

    {"name": "order_shipped",            # Meta template name
     "language": "en_US",                # Meta language code
     "parameters": ["1234"],             # body parameters: a list (positional) or a dict (named)
     "components": [...],                # optional: Meta's raw components (header, buttons), used as-is
     "content_sid": "HX…",               # Twilio Content template (Twilio needs it; Meta ignores it)
     "category": "utility"}              # marketing | utility | authentication (what Meta bills by)

Without a template the driver sends ``content.text`` as a free-form text, which WhatsApp only delivers
inside the 24 h customer-service window (outside it: Meta 131047 / Twilio 63016, a permanent failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import PermanentError

TEMPLATE_KEY = "whatsapp_template"


@dataclass(frozen=True, slots=True)
class WhatsappTemplate:
    name: str
    language: str
    parameters: tuple[str, ...] = ()
    named_parameters: Mapping[str, str] = field(default_factory=dict)
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
        components = raw.get("components")
        return cls(
            name=name,
            language=str(raw.get("language") or "en_US"),
            parameters=positional,
            named_parameters=named,
            components=tuple(components) if components else None,
            content_sid=raw.get("content_sid"),
            category=raw.get("category"),
        )

    def content_variables(self) -> dict[str, str]:
        """Twilio's ``ContentVariables``: ``{"1": …, "2": …}`` or the named ones."""
        if self.named_parameters:
            return dict(self.named_parameters)
        return {str(i): value for i, value in enumerate(self.parameters, start=1)}

    def meta_components(self) -> list[dict[str, Any]]:
        """Meta's ``template.components``: the raw ones if given, else one body with the parameters."""
        if self.components is not None:
            return [dict(c) for c in self.components]
        if self.named_parameters:
            params = [{"type": "text", "parameter_name": k, "text": v} for k, v in self.named_parameters.items()]
        else:
            params = [{"type": "text", "text": v} for v in self.parameters]
        return [{"type": "body", "parameters": params}] if params else []
