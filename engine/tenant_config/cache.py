"""Each process's parsed tenant configs, reloaded when a caller has seen a newer ``config_version``.

The claim statement and the tenant row carry ``tenants.config_version`` (as they carry
``templates_version`` for the template snapshots), so a sender learns of a change with its next batch and
an ingress replica with its next read of the tenant row, without a restart and without reading or
parsing the document while it is unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from .schema import TenantConfig
from .stored import read_stored

_LOAD = "SELECT id, region, config, config_version FROM tenants WHERE id = ANY($1::uuid[])"


class TenantConfigCache:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._entries: dict[uuid.UUID, tuple[int, TenantConfig]] = {}

    def version(self, tenant_id: uuid.UUID) -> int | None:
        entry = self._entries.get(tenant_id)
        return entry[0] if entry else None

    def from_row(self, tenant_id: uuid.UUID, version: int, region: str, raw: Mapping[str, Any] | None) -> TenantConfig:
        """The config of a row in hand, parsed only when its version is newer than the one held."""
        entry = self._entries.get(tenant_id)
        if entry is not None and entry[0] >= version:
            return entry[1]
        config = read_stored(region, raw, tenant=tenant_id)
        self._entries[tenant_id] = (version, config)
        return config

    async def ensure(self, versions: Mapping[uuid.UUID, int]) -> dict[uuid.UUID, TenantConfig]:
        """The configs of these tenants at (at least) these versions: one query for the stale ones, none
        when every version is already held."""
        stale = [t for t, v in versions.items() if (self.version(t) or 0) < v]
        if stale:
            for row in await self.pool.fetch(_LOAD, stale):
                self.from_row(row["id"], row["config_version"], row["region"], row["config"])
        return {t: self._entries[t][1] if t in self._entries else TenantConfig() for t in versions}
