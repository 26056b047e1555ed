"""Planner statistics kept up with bursts.

asyncpg prepares each statement once per connection, and PostgreSQL gives a prepared statement a generic
plan after five runs, made with the table's statistics as they were then. A plan made while ``messages``
and ``outbox`` held a few rows (a fresh deployment, a quiet hour) scanned the whole table for every claim
once a campaign put 100,000 rows there (a 100-message claim took 100 ms instead of 8), until autovacuum
analyzed it, which may be a minute later. So the relay analyzes a hot table, at once, when more of it
changed since its last analysis than it held then, or it more than doubled in size; the new statistics
also replace the cached plans.
"""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger(__name__)

#: The tables the hot path looks up by id arrays, which a burst fills from nothing.
HOT_TABLES = ("messages", "outbox", "attempts", "dedupe_claims")
#: Fewer changed rows than this never make a plan bad enough to matter.
MIN_CHANGED_ROWS = 10_000
#: Nor does a table growing by fewer pages (8 kB each) than this.
MIN_GROWN_PAGES = 128
#: The statistics target of these analyses: a sample of 300 x this many rows (PostgreSQL's default is 100).
#: The id-array plans need the table's size and its ids' spread, which a small sample gives; the default one
#: of ``messages`` took a whole core for 0.4-0.7 s at the start of every burst. Autovacuum's next analysis
#: (due soon after, as the burst's rows are updated) brings the full statistics back.
SAMPLE_TARGET = 10

# Two signs of a burst: the changes counted since the last analysis (the backends report them within a
# second, or up to ten when they reported just before), and the table's file having more than doubled
# since (at once: the planner scales its row estimate by it, but not the rest of the statistics).
_STALE = """
SELECT s.relname
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema() AND s.relname = ANY($1::text[])
  AND ((s.n_mod_since_analyze >= $2 AND s.n_mod_since_analyze > greatest(c.reltuples, 0))
       OR pg_relation_size(c.oid) / current_setting('block_size')::int > greatest(2 * c.relpages, c.relpages + $3))
  AND pg_has_role(c.relowner, 'USAGE')  -- only its owner (or a superuser) may analyze a table
"""


async def stale_tables(pool: asyncpg.Pool, tables: tuple[str, ...] = HOT_TABLES) -> list[str]:
    """The ``tables`` changed, since their last analysis, by more rows than they held then, or grown to
    more than twice their size then."""
    return [r["relname"] for r in await pool.fetch(_STALE, list(tables), MIN_CHANGED_ROWS, MIN_GROWN_PAGES)]


async def analyze_stale(pool: asyncpg.Pool, tables: tuple[str, ...] = HOT_TABLES) -> list[str]:
    """Analyze the stale ones among ``tables``; returns those analyzed.

    One already being vacuumed or analyzed (its lock is not free within a second) is left to that run.
    """
    done = []
    for table in await stale_tables(pool, tables):
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    f"SET LOCAL lock_timeout = '1s'; SET LOCAL default_statistics_target = {SAMPLE_TARGET}"
                )
                await conn.execute(f'ANALYZE "{table}"')
        except asyncpg.LockNotAvailableError:
            continue
        done.append(table)
    if done:
        log.info("analyzed %s after a burst", ", ".join(done))
    return done
