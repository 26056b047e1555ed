"""What every section of the tenant config document shares (kept apart so sections can live in their own
modules without importing the root document)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

#: A message category as dedupe rules and preferences name it (``metadata.category`` or the template
#: manifest's).
CategoryName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class Section(BaseModel):
    """Base of every part of the document: unknown keys are errors, parsed values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
