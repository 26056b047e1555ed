"""Group commit: what arrives while a group runs goes in the next one; keys never repeat in a group."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from engine.coalesce import Coalescer


class Runner:
    """Records each group and holds it until released, so a test decides what arrives meanwhile."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()
        self.running = 0
        self.most_running = 0

    async def __call__(self, items: list[str]) -> Sequence[str | BaseException]:
        self.groups.append(items)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return [ValueError(i) if i.startswith("bad") else i.upper() for i in items]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_first_item_goes_at_once_and_later_ones_share_the_next_group() -> None:
    run = Runner()
    groups = Coalescer(run, max_in_flight=1)
    first = asyncio.create_task(groups.submit("a", "a"))
    await _settle()
    assert run.groups == [["a"]]  # started alone, without waiting for company
    later = [asyncio.create_task(groups.submit(k, k)) for k in ("b", "c", "d")]
    await _settle()
    assert run.groups == [["a"]]  # they wait while the first is in flight
    run.release.set()
    assert await first == "A"
    assert await asyncio.gather(*later) == ["B", "C", "D"]
    assert run.groups == [["a"], ["b", "c", "d"]]
    assert (groups.groups, groups.items) == (2, 4)


async def test_a_key_already_in_the_group_waits_for_the_next_one() -> None:
    run = Runner()
    groups = Coalescer(run, max_in_flight=1)
    blocker = asyncio.create_task(groups.submit("x", "x"))
    await _settle()
    same = [asyncio.create_task(groups.submit("k", item)) for item in ("k1", "k2")]
    other = asyncio.create_task(groups.submit("o", "o"))
    run.release.set()
    await asyncio.gather(blocker, *same, other)
    assert run.groups == [["x"], ["k1", "o"], ["k2"]]


async def test_one_items_failure_is_its_own_and_a_runner_failure_is_the_groups() -> None:
    run = Runner()
    run.release.set()
    groups = Coalescer(run)
    results = await asyncio.gather(*(groups.submit(k, k) for k in ("a", "bad", "c")), return_exceptions=True)
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)

    async def broken(items: list[str]) -> Sequence[str]:
        raise OSError("connection lost")

    failing: Coalescer[str, str] = Coalescer(broken)
    results = await asyncio.gather(*(failing.submit(k, k) for k in ("a", "b")), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)


async def test_a_caller_that_gave_up_before_its_group_started_is_left_out() -> None:
    run = Runner()
    groups = Coalescer(run, max_in_flight=1)
    first = asyncio.create_task(groups.submit("a", "a"))
    await _settle()
    gone = asyncio.create_task(groups.submit("b", "b"))
    kept = asyncio.create_task(groups.submit("c", "c"))
    await _settle()
    gone.cancel()
    run.release.set()
    await first
    assert await kept == "C"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert run.groups == [["a"], ["c"]]


async def test_groups_in_flight_and_group_size_are_capped() -> None:
    run = Runner()
    groups = Coalescer(run, max_group=3, max_in_flight=2)
    tasks = [asyncio.create_task(groups.submit(str(i), str(i))) for i in range(8)]
    await _settle()
    assert len(run.groups) == 2 and run.most_running == 2
    run.release.set()
    await asyncio.gather(*tasks)
    assert run.most_running == 2
    assert all(len(g) <= 3 for g in run.groups)
    assert sorted(i for g in run.groups for i in g) == sorted(str(i) for i in range(8))


def test_nonsense_limits_are_refused() -> None:
    async def run(items: list[str]) -> Sequence[str]:
        return items

    with pytest.raises(ValueError):
        Coalescer(run, max_group=0)
