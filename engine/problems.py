"""API errors as data: one RFC 9457 problem+json envelope with a list of field errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.models import FieldError

PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class ApiProblem(Exception):
    """Raised by the engine's request handlers; the HTTP layer renders it."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        """``extensions``: RFC 9457 extension members (``{"current_status": "sent"}`` on a refused cancel);
        they never replace a standard member."""
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.type = type_
        self.headers = headers or {}
        self.extensions = dict(extensions or {})

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            **self.extensions,
            "type": self.type,
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        if self.errors:
            doc["errors"] = [e.as_dict() for e in self.errors]
        return doc


def from_pydantic(errors: Sequence[dict[str, Any]], *, prefix: str = "body") -> list[FieldError]:
    out = []
    for e in errors:
        loc = tuple(e.get("loc", ()))
        if not loc or loc[0] != prefix:
            loc = (prefix, *loc)
        msg = str(e.get("msg", "invalid value"))
        out.append(FieldError(loc, msg, str(e.get("type", "value_error"))))
    return out
