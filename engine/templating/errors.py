"""Template errors carry the request field they concern, so the API can answer 422 naming it."""

from __future__ import annotations


class TemplateError(Exception):
    field: str = "template_id"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        if field is not None:
            self.field = field


class UnknownTemplate(TemplateError):
    pass


class UnknownVersion(TemplateError):
    pass


class ChannelNotSupported(TemplateError):
    field = "channel"


class UnknownLocale(TemplateError):
    field = "locale"
