"""Where template text comes from: the shipped files, and (later) each tenant's own templates.

The catalog asks a :class:`TemplateSource` for versions, manifests, part listings and text. Sources are
synchronous on purpose: rendering sits on the hot path and must never await storage. A database-backed
tenant source keeps an in-memory snapshot (an :class:`InMemorySource` per tenant, refreshed after a
publish) and hands it out through :class:`TenantSources`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml  # type: ignore[import-untyped]  # no stubs installed in this venv (types-PyYAML)

from .errors import InvalidManifest
from .manifest import Manifest

#: Part files a template version may have.
PARTS = frozenset({"subject.txt", "body.html", "body.txt", "sms.txt", "push_title.txt", "push_body.txt", "inapp.md"})
_PARTIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.(?:html|txt|md)$")
_VERSION_FILE = re.compile(r"^v([1-9][0-9]{0,5})\.yaml$")


def is_partial_name(name: str) -> bool:
    """Partial names are plain file names (``header.html``): no paths, so no traversal."""
    return bool(_PARTIAL.match(name))


class TemplateSource(Protocol):
    """Read access to one owner's templates (shipped, or one tenant's).

    Implementations return published content only. Ids and locales arrive validated (no separators).
    """

    def versions(self, template_id: str) -> tuple[int, ...]:
        """Published versions of the id, ascending; empty when the owner has none."""
        ...

    def manifest(self, template_id: str, version: int) -> Manifest:
        """The version's manifest.

        Raises:
            InvalidManifest: the stored document is malformed.
        """
        ...

    def parts(self, locale: str, template_id: str, version: int) -> frozenset[str]:
        """Part file names present for the locale (empty when the locale has none)."""
        ...

    def read(self, locale: str, template_id: str, version: int, part: str) -> str:
        """The text of one part listed by :meth:`parts`."""
        ...

    def partial(self, locale: str, name: str) -> str | None:
        """The text of ``<locale>/_partials/<name>``, or None."""
        ...


class TenantSources(Protocol):
    """Tenant slug -> that tenant's source, or None. A plain ``dict[str, TemplateSource]`` qualifies."""

    def get(self, tenant: str, /) -> TemplateSource | None: ...


class FilesystemSource:
    """The shipped layout: ``<root>/<locale>/<id>/v<N>/<part>``, ``<root>/_manifests/<id>/v<N>.yaml``,
    ``<root>/<locale>/_partials/<name>``.

    Listings and manifests are cached for the life of the object (shipped files do not change under a
    running process; call :meth:`refresh` after editing them in development).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._versions: dict[str, tuple[int, ...]] = {}
        self._manifests: dict[tuple[str, int], Manifest] = {}
        self._parts: dict[tuple[str, str, int], frozenset[str]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            self._versions.clear()
            self._manifests.clear()
            self._parts.clear()

    def versions(self, template_id: str) -> tuple[int, ...]:
        cached = self._versions.get(template_id)
        if cached is None:
            folder = self.root / "_manifests" / template_id
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
            found = sorted(int(m.group(1)) for n in names if (m := _VERSION_FILE.match(n)))
            cached = self._versions[template_id] = tuple(found)
        return cached

    def manifest(self, template_id: str, version: int) -> Manifest:
        key = (template_id, version)
        cached = self._manifests.get(key)
        if cached is None:
            path = self.root / "_manifests" / template_id / f"v{version}.yaml"
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                raise InvalidManifest(f"manifest {template_id}:v{version} is not valid YAML: {err}") from None
            cached = self._manifests[key] = Manifest.from_dict(template_id, version, doc)
        return cached

    def parts(self, locale: str, template_id: str, version: int) -> frozenset[str]:
        key = (locale, template_id, version)
        cached = self._parts.get(key)
        if cached is None:
            folder = self.root / locale / template_id / f"v{version}"
            names = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
            cached = self._parts[key] = frozenset(names & PARTS)
        return cached

    def read(self, locale: str, template_id: str, version: int, part: str) -> str:
        return (self.root / locale / template_id / f"v{version}" / part).read_text(encoding="utf-8")

    def partial(self, locale: str, name: str) -> str | None:
        if not is_partial_name(name):
            return None
        path = self.root / locale / "_partials" / name
        return path.read_text(encoding="utf-8") if path.is_file() else None


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One published version held in memory: its manifest and ``{locale: {part: text}}``."""

    manifest: Manifest
    texts: Mapping[str, Mapping[str, str]]


@dataclass(slots=True)
class InMemorySource:
    """A source held in memory: tests, and the snapshot a database-backed tenant source serves from."""

    templates: dict[str, dict[int, StoredVersion]] = field(default_factory=dict)
    partials: dict[str, dict[str, str]] = field(default_factory=dict)  #: locale -> name -> text

    def add(self, manifest: Manifest, texts: Mapping[str, Mapping[str, str]]) -> None:
        unknown = {p for parts in texts.values() for p in parts} - PARTS
        if unknown:
            raise ValueError(f"unknown part(s): {', '.join(sorted(unknown))}")
        versions = self.templates.setdefault(manifest.template_id, {})
        versions[manifest.version] = StoredVersion(manifest, texts)

    def versions(self, template_id: str) -> tuple[int, ...]:
        return tuple(sorted(self.templates.get(template_id, {})))

    def manifest(self, template_id: str, version: int) -> Manifest:
        return self.templates[template_id][version].manifest

    def parts(self, locale: str, template_id: str, version: int) -> frozenset[str]:
        stored = self.templates.get(template_id, {}).get(version)
        return frozenset(stored.texts.get(locale, {})) if stored else frozenset()

    def read(self, locale: str, template_id: str, version: int, part: str) -> str:
        return self.templates[template_id][version].texts[locale][part]

    def partial(self, locale: str, name: str) -> str | None:
        return self.partials.get(locale, {}).get(name)
