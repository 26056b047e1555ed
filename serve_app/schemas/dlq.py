"""``/admin/dlq``: which dead messages a page lists (the bodies and answers are the engine's models)."""

from __future__ import annotations

from pydantic import Field

from engine.lifecycle import DeadFilter
from engine.lifecycle.dlq import MAX_PAGE


class DeadLetterQuery(DeadFilter):
    """Every filter narrows; pass a page's ``next_cursor`` back as ``cursor``, with the same filters."""

    cursor: str | None = Field(None, max_length=200, description="the previous page's next_cursor")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="dead messages per page")
