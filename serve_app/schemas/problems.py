"""RFC 9457 problem details: the one error envelope, and the per-route ``responses`` that document it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from engine.problems import PROBLEM_CONTENT_TYPE

REF_PREFIX = "#/components/schemas/"


class FieldProblem(BaseModel):
    """One field at fault, located like pydantic's errors: ``["body", "to", "email"]``."""

    loc: list[str | int]
    msg: str
    type: str = "value_error"


class Problem(BaseModel):
    """``application/problem+json``: every 4xx and 5xx answer of the API."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Unprocessable content",
                    "status": 422,
                    "detail": "the notification is not valid",
                    "instance": "/api/notifications",
                    "errors": [
                        {"loc": ["body", "to", "email"], "msg": "value is not a valid email", "type": "value_error"}
                    ],
                }
            ]
        }
    )

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    current_status: str | None = Field(
        None, description="a 409 about a message's state: the status it has now (cancel, reschedule)"
    )
    limit: dict[str, Any] | None = Field(
        None, description="a 429 of a quota: its config key (`name`), channel, period, quota, use and reset"
    )
    budget: dict[str, Any] | None = Field(
        None, description="a 429 of a budget: its config key (`name`), currency, monthly, spent and reset"
    )


_EXAMPLES: dict[int, tuple[str, str, list[dict[str, Any]] | None]] = {
    400: ("Bad request", "the body is not valid JSON", None),
    401: ("Unauthorized", "missing Authorization header (expected 'Bearer <token>')", None),
    403: ("Forbidden", "the token lacks the 'send' scope", None),
    404: ("Not found", "no notification 'msg_0190b5a7c2f37d8e9a1b2c3d4e5f6a7b'", None),
    409: ("Conflict", "a request with this idempotency key is still being processed; retry shortly", None),
    412: ("Precondition failed", "the tenant changed since config_version 7; read it again", None),
    413: ("Payload too large", "the body is larger than the limit", None),
    429: (
        "Too many requests",
        "the sms quota limits.sms.per_day (1000 messages per UTC day) is used up until 2026-12-02T00:00:00+00:00",
        [{"loc": ["body", "channel"], "msg": "limits.sms.per_day is used up"}],
    ),
    422: (
        "Unprocessable content",
        "the request is not valid",
        [{"loc": ["body", "channel"], "msg": "Input should be 'email', 'sms', 'push', 'whatsapp' or 'inapp'"}],
    ),
    502: ("Bad gateway", "the SNS signing certificate could not be fetched", None),
    503: ("Service unavailable", "the broker cannot be reached", None),
}

_DESCRIPTIONS = {
    400: "The body is not JSON",
    401: "No token, or an invalid or expired one",
    403: "The token lacks the scope, or names another tenant",
    404: "Not found (another tenant's resources are not found either)",
    409: "Conflicts with the resource's state",
    412: "If-Match names a version that is no longer current",
    413: "The body is too large",
    422: "A field is not valid; `errors` names each",
    429: "A quota or budget is used up: `limit` or `budget` names it, `Retry-After` says when it frees up",
    502: "Something Herald had to fetch from the provider could not be fetched; send it again",
    503: "A part Herald needs is unavailable",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting problem+json answers for these status codes, with examples."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        title, detail, errors = _EXAMPLES[status]
        example: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        if errors:
            example["errors"] = [{"type": "value_error", **e} for e in errors]
        out[status] = {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": REF_PREFIX + "Problem"}, "example": example}},
        }
    return out


def state_conflict() -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a 409 refused by the message's state: ``current_status`` says which."""
    example = {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "the notification is sent: only one that has not started sending can be cancelled",
        "current_status": "sent",
    }
    return {
        409: {
            "description": "The message's status does not allow it; `current_status` is the status it has",
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": REF_PREFIX + "Problem"}, "example": example}},
        }
    }


def problem_components() -> dict[str, Any]:
    """The component schemas the ``problems()`` responses refer to."""
    _, doc = models_json_schema([(Problem, "serialization")], ref_template=REF_PREFIX + "{model}")
    return dict(doc.get("$defs", {}))


#: Routes whose path carries a token sent to recipients: a request line the front door (HAProxy) will not
#: read, e.g. a token of kilobytes, is answered 400 there in HTML, before Herald sees it.
FRONT_DOOR_400: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request line is too long or malformed (answered by the front door)",
          "content": {"text/html": {"schema": {"type": "string"}}}},
}  # fmt: skip
