"""Template references: ``otp_login`` (newest published) or ``otp_login:v3``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_REF = re.compile(r"^(?P<id>[a-z0-9][a-z0-9_.-]{0,99})(?::v(?P<version>[1-9]\d{0,5}))?$")


@dataclass(frozen=True, slots=True)
class TemplateRef:
    id: str
    version: int | None = None

    @classmethod
    def parse(cls, ref: str) -> TemplateRef:
        match = _REF.match(ref)
        if not match:
            raise ValueError(f"{ref!r} is not a template reference (expected 'name' or 'name:v3')")
        version = match.group("version")
        return cls(match.group("id"), int(version) if version else None)

    def __str__(self) -> str:
        return self.id if self.version is None else f"{self.id}:v{self.version}"
