"""Tenant-managed templates: drafts, publishing, rollback, and the per-process snapshot renderers read.

A publish turns the tenant's draft into the next version (immutable from then on) and bumps
``tenants.templates_version``; every process holds an in-memory snapshot per tenant and reloads it when
the version it sees on a claimed message or a tenant row is newer, so rendering never awaits storage.
Every publish and rollback is an audit record.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from engine.ids import new_id
from engine.templating import Manifest, TemplateCatalog
from engine.templating.budget import PREVIEW_LIMITS
from engine.templating.errors import InvalidManifest, TemplateError
from engine.templating.sources import PARTS, InMemorySource

_LOAD = """
SELECT template_id, version, manifest, texts FROM tenant_templates
WHERE tenant_id = $1 AND status = 'published'
"""


class TemplateConflict(Exception):
    """The operation does not fit the template's state (no draft to publish, no such version...)."""


@dataclass(frozen=True, slots=True)
class TemplateVersionView:
    template_id: str
    version: int | None
    status: str
    manifest: dict[str, Any]
    texts: dict[str, dict[str, str]]
    republished_from: int | None
    created_by: str | None
    updated_at: datetime
    published_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "version": self.version,
            "ref": f"{self.template_id}:v{self.version}" if self.version else None,
            "status": self.status,
            "manifest": self.manifest,
            "texts": self.texts,
            "republished_from": self.republished_from,
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "published_at": self.published_at.isoformat() if self.published_at else None,
        }


def _view(row: asyncpg.Record) -> TemplateVersionView:
    return TemplateVersionView(
        row["template_id"],
        row["version"],
        row["status"],
        row["manifest"],
        row["texts"],
        row["republished_from"],
        row["created_by"],
        row["updated_at"],
        row["published_at"],
    )


def check_texts(texts: Mapping[str, Mapping[str, str]]) -> None:
    """Raises: InvalidManifest naming an unknown part or an empty document."""
    if not texts:
        raise InvalidManifest("texts must hold at least one locale", field="texts")
    for locale, parts in texts.items():
        unknown = set(parts) - PARTS
        if unknown:
            raise InvalidManifest(f"{locale}: unknown part(s) {', '.join(sorted(unknown))}", field="texts")


def validate_document(
    catalog: TemplateCatalog,
    tenant: str,
    template_id: str,
    manifest: dict[str, Any],
    texts: dict[str, Any],
    *,
    partials: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Compile every part of a draft in the sandbox, for every channel it declares, with the tenant's own
    ``partials`` (locale -> name -> text) in front of the shipped ones, as when it is sent.

    Raises:
        TemplateError: malformed manifest or texts.
        RenderError: a part does not compile or uses a construct the sandbox refuses.
    """
    check_texts(texts)
    parsed = Manifest.from_dict(template_id, 1, manifest)
    probe = InMemorySource(partials={locale: dict(names) for locale, names in (partials or {}).items()})
    probe.add(parsed, texts)
    trial = TemplateCatalog(catalog.shipped, tenants={tenant: probe}, limits=PREVIEW_LIMITS)
    for locale in texts:
        for channel in parsed.channels:
            resolved = trial.resolve(f"{template_id}:v1", locale=locale, channel=channel, tenant=tenant)
            trial.compile(resolved, channel)
            trial.render(resolved, parsed.examples(), channel)


async def load_partials(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> dict[str, dict[str, str]]:
    """The tenant's partials, locale -> name -> text: what its templates' includes find."""
    found: dict[str, dict[str, str]] = {}
    for r in await pool.fetch("SELECT locale, name, text FROM tenant_partials WHERE tenant_id = $1", tenant_id):
        found.setdefault(r["locale"], {})[r["name"]] = r["text"]
    return found


class TenantTemplateStore:
    """Postgres persistence of tenant templates."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save_draft(
        self, tenant_id: uuid.UUID, template_id: str, manifest: dict[str, Any], texts: dict[str, Any], actor: str
    ) -> TemplateVersionView:
        row = await self.pool.fetchrow(
            """INSERT INTO tenant_templates (id, tenant_id, template_id, status, manifest, texts, created_by)
               VALUES ($1, $2, $3, 'draft', $4, $5, $6)
               ON CONFLICT (tenant_id, template_id) WHERE status = 'draft'
               DO UPDATE SET manifest = EXCLUDED.manifest, texts = EXCLUDED.texts, updated_at = now(),
                             created_by = EXCLUDED.created_by
               RETURNING *""",
            new_id(),
            tenant_id,
            template_id,
            manifest,
            texts,
            actor,
        )
        assert row is not None
        return _view(row)

    async def draft(self, tenant_id: uuid.UUID, template_id: str) -> TemplateVersionView | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM tenant_templates WHERE tenant_id = $1 AND template_id = $2 AND status = 'draft'",
            tenant_id,
            template_id,
        )
        return _view(row) if row else None

    async def versions(self, tenant_id: uuid.UUID, template_id: str) -> list[TemplateVersionView]:
        rows = await self.pool.fetch(
            """SELECT * FROM tenant_templates WHERE tenant_id = $1 AND template_id = $2
               ORDER BY version NULLS LAST""",
            tenant_id,
            template_id,
        )
        return [_view(r) for r in rows]

    async def version(self, tenant_id: uuid.UUID, template_id: str, version: int) -> TemplateVersionView | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM tenant_templates WHERE tenant_id = $1 AND template_id = $2 AND version = $3",
            tenant_id,
            template_id,
            version,
        )
        return _view(row) if row else None

    async def publish(self, tenant_id: uuid.UUID, template_id: str, actor: str) -> TemplateVersionView:
        """The draft becomes the next version.

        Raises:
            TemplateConflict: there is no draft.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            next_version = await self._next_version(conn, tenant_id, template_id)
            row = await conn.fetchrow(
                """UPDATE tenant_templates SET status = 'published', version = $3, published_at = now(),
                          updated_at = now()
                   WHERE tenant_id = $1 AND template_id = $2 AND status = 'draft'
                   RETURNING *""",
                tenant_id,
                template_id,
                next_version,
            )
            if row is None:
                raise TemplateConflict(f"{template_id} has no draft to publish")
            await self._published(conn, tenant_id, template_id, next_version, actor, "template.publish", None)
        return _view(row)

    async def rollback(
        self, tenant_id: uuid.UUID, template_id: str, to_version: int, actor: str
    ) -> TemplateVersionView:
        """Publish a copy of an older version as the new latest.

        Raises:
            TemplateConflict: no such published version.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                """SELECT manifest, texts FROM tenant_templates
                   WHERE tenant_id = $1 AND template_id = $2 AND version = $3""",
                tenant_id,
                template_id,
                to_version,
            )
            if old is None:
                raise TemplateConflict(f"{template_id} has no version {to_version}")
            next_version = await self._next_version(conn, tenant_id, template_id)
            row = await conn.fetchrow(
                """INSERT INTO tenant_templates (id, tenant_id, template_id, version, status, manifest, texts,
                                                 republished_from, created_by, published_at)
                   VALUES ($1, $2, $3, $4, 'published', $5, $6, $7, $8, now()) RETURNING *""",
                new_id(),
                tenant_id,
                template_id,
                next_version,
                old["manifest"],
                old["texts"],
                to_version,
                actor,
            )
            await self._published(conn, tenant_id, template_id, next_version, actor, "template.rollback", to_version)
        assert row is not None
        return _view(row)

    async def save_partial(self, tenant_id: uuid.UUID, locale: str, name: str, text: str, actor: str) -> None:
        """Partials apply at once to the tenant's templates (they are not versioned)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO tenant_partials (tenant_id, locale, name, text, updated_by) VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (tenant_id, locale, name)
                   DO UPDATE SET text = EXCLUDED.text, updated_by = EXCLUDED.updated_by, updated_at = now()""",
                tenant_id,
                locale,
                name,
                text,
                actor,
            )
            await self._published(
                conn, tenant_id, "_partials", 0, actor, "template.partial", None, subject=f"{locale}/{name}"
            )

    async def partials(self, tenant_id: uuid.UUID) -> list[dict[str, str]]:
        rows = await self.pool.fetch(
            "SELECT locale, name, text FROM tenant_partials WHERE tenant_id = $1 ORDER BY locale, name", tenant_id
        )
        return [dict(r) for r in rows]

    @staticmethod
    async def _next_version(conn: asyncpg.Connection, tenant_id: uuid.UUID, template_id: str) -> int:
        # Serialise publishers of one template id: the advisory lock lives until the transaction ends.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{tenant_id}:{template_id}")
        current = await conn.fetchval(
            "SELECT max(version) FROM tenant_templates WHERE tenant_id = $1 AND template_id = $2",
            tenant_id,
            template_id,
        )
        return int(current or 0) + 1

    @staticmethod
    async def _published(
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        template_id: str,
        version: int,
        actor: str,
        action: str,
        source: int | None,
        *,
        subject: str | None = None,
    ) -> None:
        await conn.execute("UPDATE tenants SET templates_version = templates_version + 1 WHERE id = $1", tenant_id)
        detail = {"version": version, "republished_from": source}
        await conn.execute(
            "INSERT INTO audit_log (tenant_id, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)",
            tenant_id,
            actor,
            action,
            subject or f"{template_id}:v{version}",
            detail,
        )


class TenantTemplateCache:
    """Per-process snapshots of tenants' published templates (the catalog's ``tenants`` mapping)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._sources: dict[str, InMemorySource] = {}
        self._versions: dict[str, int] = {}
        self.catalog: TemplateCatalog | None = None

    def get(self, tenant: str, /) -> InMemorySource | None:
        return self._sources.get(tenant)

    async def ensure(self, tenant: str, tenant_id: uuid.UUID, templates_version: int) -> None:
        """Load the tenant's snapshot when the caller saw a newer ``templates_version`` (one query)."""
        if self._versions.get(tenant, 0) >= templates_version:
            return
        rows = await self.pool.fetch(_LOAD, tenant_id)
        source = InMemorySource()
        for r in rows:
            try:
                source.add(Manifest.from_dict(r["template_id"], r["version"], r["manifest"]), r["texts"])
            except (TemplateError, ValueError):
                continue  # validated at publish; a row that no longer parses is not served
        source.partials = await load_partials(self.pool, tenant_id)
        self._sources[tenant] = source
        self._versions[tenant] = templates_version
        if self.catalog is not None:
            self.catalog.invalidate(tenant)
