"""Template errors name the request field they concern, so the API can answer 422 naming it.

::

    TemplateError (ValueError)        field: which request field is wrong
    ├── InvalidTemplateRef            "otp login:v0" is not a reference           (template_id)
    ├── UnknownTemplate               no such template id (for this tenant)       (template_id)
    ├── UnknownVersion                the id exists, that version does not        (template_id)
    ├── InvalidManifest               a manifest document is malformed            (template_id)
    ├── ChannelNotSupported           the version does not serve the channel      (channel)
    ├── InvalidLocale                 not a locale tag                            (locale)
    └── UnknownLocale                 no content in the locale nor its fallbacks  (locale)

Rendering failures are :class:`engine.errors.RenderError` (a permanent send failure), not these: a
template that resolved but cannot render is the message's problem, not the request's shape.
"""

from __future__ import annotations


class TemplateError(ValueError):
    """A template reference cannot be resolved; ``field`` names the request field at fault."""

    field: str = "template_id"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class InvalidTemplateRef(TemplateError):
    """The reference is not ``name`` or ``name:v<N>``."""


class UnknownTemplate(TemplateError):
    """No template with this id exists for the tenant (nor shipped)."""


class UnknownVersion(TemplateError):
    """The template exists but not in the requested version."""


class InvalidManifest(TemplateError):
    """A version's manifest is malformed (unknown key, bad type, unknown channel...)."""


class ChannelNotSupported(TemplateError):
    """The resolved version does not serve the requested channel."""

    field = "channel"


class InvalidLocale(TemplateError):
    """The locale is not a BCP 47 style tag such as ``en`` or ``en-GB``."""

    field = "locale"


class UnknownLocale(TemplateError):
    """Neither the locale nor any fallback has the parts the channel needs."""

    field = "locale"
