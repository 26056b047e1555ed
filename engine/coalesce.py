"""Group commit: calls that arrive while a statement is in flight share the next one.

The first call starts its statement at once (no waiting for company); the calls that arrive while it
runs go together in the next, so a busy process sends one statement for many calls and an idle one adds
no delay. Two items with the same key never go in one group (a statement may claim a key only once): the
later one waits for the next group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Waiting(Generic[T, R]):
    key: Hashable
    item: T
    done: asyncio.Future[R]


class Coalescer(Generic[T, R]):
    """Runs ``run`` on groups of up to ``max_group`` items, at most ``max_in_flight`` groups at once.

    ``run`` answers one outcome per item, in order; an exception it raises fails its whole group.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_group: int = 100,
        max_in_flight: int = 2,
    ) -> None:
        if max_group < 1 or max_in_flight < 1:
            raise ValueError("max_group and max_in_flight must be at least 1")
        self._run = run
        self.max_group = max_group
        self.max_in_flight = max_in_flight
        self._waiting: list[_Waiting[T, R]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self.groups = 0  #: groups run so far
        self.items = 0  #: items run so far

    async def submit(self, key: Hashable, item: T) -> R:
        """``item``'s outcome once its group has run. A caller cancelled before its group starts leaves
        nothing behind; once the group runs, the item's fate is the group's."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(key, item, done))
        if len(self._in_flight) < self.max_in_flight:
            self._start()
        return await done

    def _start(self) -> None:
        group: list[_Waiting[T, R]] = []
        later: list[_Waiting[T, R]] = []
        keys: set[Hashable] = set()
        for waiting in self._waiting:
            if waiting.done.done():  # its caller gave up before the group started
                continue
            if len(group) < self.max_group and waiting.key not in keys:
                group.append(waiting)
                keys.add(waiting.key)
            else:
                later.append(waiting)
        self._waiting = later
        if not group:
            return
        task = asyncio.create_task(self._run_group(group))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    async def _run_group(self, group: list[_Waiting[T, R]]) -> None:
        self.groups += 1
        self.items += len(group)
        try:
            outcomes = await self._run([w.item for w in group])
        except asyncio.CancelledError:
            for waiting in group:
                waiting.done.cancel()
            raise
        except Exception as err:
            for waiting in group:
                if not waiting.done.done():
                    waiting.done.set_exception(err)
            return
        if len(outcomes) != len(group):
            broken = RuntimeError(f"a group of {len(group)} items answered {len(outcomes)} outcomes")
            outcomes = [broken] * len(group)
        for waiting, outcome in zip(group, outcomes, strict=True):
            if waiting.done.done():
                continue
            if isinstance(outcome, BaseException):
                waiting.done.set_exception(outcome)
            else:
                waiting.done.set_result(outcome)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._waiting and len(self._in_flight) < self.max_in_flight:
            self._start()
