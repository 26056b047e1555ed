"""``/api/shortlinks``: a tenant's tracked links."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ShortlinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"url": "https://example.com/sale"}]})

    url: str = Field(max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$", description="an http(s) URL")


class Shortlink(BaseModel):
    id: str = Field(pattern=r"^sl_[0-9a-f]{32}$")
    url: str
    short_url: str = Field(description="the signed redirect to hand out (``/l/{token}``)")
    clicks: int
