"""``/api/templates``, ``/api/partials`` and ``/api/preview``: tenant templates and what a render shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from engine.channels import Channel


class TemplateVersion(BaseModel):
    """A tenant's draft (``version`` null) or one of its published, immutable versions."""

    template_id: str
    version: int | None = None
    ref: str | None = Field(None, description="``id:vN`` for published versions")
    status: Literal["draft", "published"]
    manifest: dict[str, Any]
    texts: dict[str, dict[str, str]] = Field(description="locale -> part file -> text")
    republished_from: int | None = Field(None, description="the version a rollback republished")
    created_by: str | None = None
    updated_at: datetime
    published_at: datetime | None = None


class TemplateListing(BaseModel):
    """A template id's versions: the tenant's own (with its draft) or, when it has none, the shipped ones."""

    template_id: str
    owner: Literal["tenant", "shipped"]
    latest: int | None = None
    versions: list[TemplateVersion] | list[int] = Field(
        description="the tenant's published versions, or the shipped version numbers"
    )
    draft: TemplateVersion | None = None


class Partial(BaseModel):
    locale: str
    name: str = Field(examples=["header.html"])
    text: str


class PartialList(BaseModel):
    partials: list[Partial]


class PreviewProblem(BaseModel):
    name: str
    message: str
    warning: bool


class SmsFacts(BaseModel):
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    segments: int


class PreviewResult(BaseModel):
    """Every rendered part and what an author should know about it."""

    template_id: str
    version: int
    locale_used: str
    channel: Channel
    parts: dict[str, str] = Field(description="part file -> rendered text")
    text_derived: bool = Field(description="the email text part was derived from the HTML")
    variables_used: list[str]
    variables_missing: list[str] = Field(description="required variables the request lacks (examples stood in)")
    problems: list[PreviewProblem]
    warnings: list[str]
    sms: SmsFacts | None = None
