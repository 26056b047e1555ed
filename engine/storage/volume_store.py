"""The Postgres adapter of :class:`~engine.routing.volumes.VolumeStore`: monthly sends per provider account
(``provider_volumes``), read once at start and added to in one upsert per flush."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import asyncpg

_LOAD = "SELECT channel, provider, owner, sends FROM provider_volumes WHERE month = $1"

_ADD = """
INSERT INTO provider_volumes AS v (month, channel, provider, owner, sends)
SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (month, channel, provider, owner)
DO UPDATE SET sends = v.sends + EXCLUDED.sends, updated_at = now()
"""


def month_start(month: str) -> date:
    """``"2026-12"`` -> 2026-12-01."""
    year, _, number = month.partition("-")
    return date(int(year), int(number), 1)


class PostgresVolumeStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=1)
        return self._pool

    async def load(self, month: str) -> dict[tuple[str, str, str], int]:
        """Raises: OSError, TimeoutError when the database cannot be reached."""
        try:
            rows = await (await self._get_pool()).fetch(_LOAD, month_start(month))
        except asyncpg.InterfaceError as err:
            raise ConnectionResetError(f"volumes database: {type(err).__name__}") from err
        except (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as err:
            raise ConnectionRefusedError(f"volumes database refused the connection ({type(err).__name__})") from err
        return {(r["channel"], r["provider"], r["owner"]): int(r["sends"]) for r in rows}

    async def add(self, deltas: Mapping[tuple[str, str, str, str], int]) -> None:
        """Raises: OSError, TimeoutError when the database cannot be reached (nothing was added)."""
        if not deltas:
            return
        keys = list(deltas)
        try:
            await (await self._get_pool()).execute(
                _ADD,
                [month_start(k[0]) for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [k[3] for k in keys],
                [deltas[k] for k in keys],
            )
        except asyncpg.InterfaceError as err:
            raise ConnectionResetError(f"volumes database: {type(err).__name__}") from err
        except (asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as err:
            raise ConnectionRefusedError(f"volumes database refused the connection ({type(err).__name__})") from err

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
