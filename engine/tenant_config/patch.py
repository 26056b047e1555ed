"""JSON merge patch (RFC 7396), what a change touched, and which keys a tenant admin may touch.

The merge is the RFC's ten-line algorithm written out rather than a dependency: the packaged
implementations mutate their first argument in place, and the cached config documents are shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Keys a tenant admin may change unless the platform says otherwise (``HERALD_TENANT_EDITABLE_KEYS``).
DEFAULT_TENANT_EDITABLE: tuple[str, ...] = ("default_locale", "unsubscribe", "providers")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2: objects merge key by key, ``null`` removes a key, anything else replaces
    (arrays included). Neither argument is modified."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves that differ (an absent key and ``null`` are the same; arrays compare
    whole)."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            out += changed_paths(before.get(key), after.get(key), path)
        return out
    return [] if before == after else [prefix]


@dataclass(frozen=True, slots=True)
class EditPolicy:
    """Which parts of the document a tenant admin may change: dotted paths, each covering what is under
    it (``providers`` covers ``providers.email.allow``). The platform operator may change every key."""

    tenant_editable: tuple[str, ...] = DEFAULT_TENANT_EDITABLE

    def may_edit(self, path: str) -> bool:
        return any(path == key or path.startswith(key + ".") for key in self.tenant_editable)

    def refused(self, paths: Iterable[str]) -> list[str]:
        return [p for p in paths if not self.may_edit(p)]
