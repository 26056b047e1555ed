"""Template references: ``otp_login`` (newest published version) or ``otp_login:v3``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import InvalidTemplateRef

#: Template ids are path segments on disk and keys in the database: keep them boring.
TEMPLATE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_REF = re.compile(r"^(?P<id>[^:]*)(?::(?P<version>.*))?$")
_VERSION = re.compile(r"^v([1-9][0-9]{0,5})$")
#: The highest version a reference can name (six digits).
MAX_VERSION = 999_999


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A parsed reference; ``version`` is None for "the newest published one"."""

    id: str
    version: int | None = None

    @classmethod
    def parse(cls, ref: str) -> TemplateRef:
        """Parse ``name`` or ``name:v<N>``.

        Raises:
            InvalidTemplateRef: (a ValueError) with a message saying what is wrong.
        """
        if not isinstance(ref, str):
            raise InvalidTemplateRef(f"{ref!r} is not a template reference (expected 'name' or 'name:v3')")
        return _parse(ref)

    def __str__(self) -> str:
        return self.id if self.version is None else f"{self.id}:v{self.version}"


@lru_cache(maxsize=4096)  # every message resolves its reference: the same few strings, again and again
def _parse(ref: str) -> TemplateRef:
    match = _REF.match(ref.strip())
    if match is None:
        raise InvalidTemplateRef(f"{ref!r} is not a template reference (expected 'name' or 'name:v3')")
    template_id, version = match.group("id"), match.group("version")
    if not TEMPLATE_ID.match(template_id):
        raise InvalidTemplateRef(
            f"{ref!r}: template id must be 1-100 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
        )
    if version is None:
        return TemplateRef(template_id)
    number = _VERSION.match(version)
    if number is None:
        raise InvalidTemplateRef(f"{ref!r}: version must look like 'v3' (v1 and up)")
    return TemplateRef(template_id, int(number.group(1)))
