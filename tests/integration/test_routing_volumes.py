"""Monthly sends per provider account persisted in PostgreSQL: a restarted health board reads them back,
so a volume price tier crossed before the restart still decides the route after it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from engine.channels import Channel
from engine.routing import BreakerKey, HealthBoard, RouteQuery, Tally, parse_table, plan_route
from engine.routing.volumes import VolumeKeeper
from engine.storage.volume_store import PostgresVolumeStore
from tests.engine.test_routing_health import Clock

pytestmark = pytest.mark.integration

#: Twilio's US price drops below SNS's from the 4th send of the month on the same account.
TABLE = parse_table(
    """
version: volumes
channels:
  sms:
    twilio: {unit: segment, prices: {US: [{from: 1, price: 0.0083}, {from: 4, price: 0.005}]}}
    sns: {unit: segment, prices: {US: 0.00581}}
""",
    source="test",
)


def marketing(owner: str) -> RouteQuery:
    """A marketing SMS to the US from a tenant sending with its own Twilio account (its own volume)."""
    return RouteQuery(
        channel=Channel.SMS,
        tenant=owner,
        region="us",
        destination="US",
        category="marketing",
        priority="normal",
        configured=("twilio", "sns"),
        own_credentials=frozenset({"twilio"}),
    )


def sent(owner: str, n: int) -> Tally:
    return Tally(BreakerKey("twilio", "sms", "us", owner), ok=n)


def chosen(board: HealthBoard, owner: str) -> str | None:
    plan = plan_route(marketing(owner), TABLE, board.snapshot(), now=0)
    return plan.chosen.provider if plan.chosen else None


async def persisted(database_url: str, owner: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT month, sends FROM provider_volumes WHERE owner = $1 ORDER BY month", owner)
    finally:
        await conn.close()
    return [(r["month"].strftime("%Y-%m"), r["sends"]) for r in rows]


async def restarted(database_url: str, clock: Clock) -> tuple[HealthBoard, VolumeKeeper]:
    board = HealthBoard(TABLE.breaker_policy, clock)
    return board, VolumeKeeper(board, PostgresVolumeStore(database_url))


async def test_counts_and_the_tier_they_reached_survive_a_restart(database_url: str) -> None:
    owner, clock = f"t-{uuid.uuid4().hex[:8]}", Clock()
    board, keeper = await restarted(database_url, clock)
    assert await keeper.load()
    assert chosen(board, owner) == "sns"  # the first sends of the month: Twilio's $0.0083 tier
    board.apply([sent(owner, 2)])
    assert await keeper.flush() == 1  # one counter, one statement
    board.apply([sent(owner, 1)])  # the 3rd send: the next one is priced at Twilio's $0.005
    assert chosen(board, owner) == "twilio"
    assert await keeper.flush() == 1 and await keeper.flush() == 0
    assert await persisted(database_url, owner) == [(board.snapshot().month, 3)]
    await keeper.store.aclose()  # type: ignore[attr-defined]

    board, keeper = await restarted(database_url, clock)
    board.apply([sent(owner, 1)])  # counted before the persisted volumes were read back
    assert board.snapshot().volume("sms", "twilio", owner) == 1
    assert await keeper.load()
    assert board.snapshot().volume("sms", "twilio", owner) == 4 and chosen(board, owner) == "twilio"
    assert await keeper.flush() == 1
    assert await persisted(database_url, owner) == [(board.snapshot().month, 4)]
    await keeper.store.aclose()  # type: ignore[attr-defined]

    board, keeper = await restarted(database_url, clock)
    assert await keeper.load() and board.snapshot().volume("sms", "twilio", owner) == 4
    await keeper.store.aclose()  # type: ignore[attr-defined]


async def test_a_new_month_starts_from_zero_and_the_old_months_tail_is_still_saved(database_url: str) -> None:
    owner, clock = f"t-{uuid.uuid4().hex[:8]}", Clock(1_751_327_990.0)  # 2025-06-30 23:59:50 UTC
    board, keeper = await restarted(database_url, clock)
    assert await keeper.load()
    board.apply([sent(owner, 5)])
    clock.advance(20)  # July
    board.apply([sent(owner, 1)])
    assert board.snapshot().volume("sms", "twilio", owner) == 1
    assert await keeper.flush() == 2
    assert await persisted(database_url, owner) == [("2025-06", 5), ("2025-07", 1)]
    await keeper.store.aclose()  # type: ignore[attr-defined]
    board, keeper = await restarted(database_url, clock)
    assert await keeper.load() and board.snapshot().volume("sms", "twilio", owner) == 1
    await keeper.store.aclose()  # type: ignore[attr-defined]


async def test_an_unreachable_database_keeps_the_counts_for_a_later_flush(database_url: str) -> None:
    owner, clock = f"t-{uuid.uuid4().hex[:8]}", Clock()
    board = HealthBoard(TABLE.breaker_policy, clock)
    keeper = VolumeKeeper(board, PostgresVolumeStore("postgresql://postgres@127.0.0.1:9/none"))
    board.apply([sent(owner, 2)])
    assert not await keeper.load() and await keeper.flush() == 0  # nothing written before it was read
    board.apply([sent(owner, 1)])
    keeper.store = PostgresVolumeStore(database_url)  # the database is back
    assert await keeper.flush() == 1
    assert await persisted(database_url, owner) == [(board.snapshot().month, 3)]
    assert board.snapshot().volume("sms", "twilio", owner) == 3
    await keeper.store.aclose()  # type: ignore[attr-defined]
