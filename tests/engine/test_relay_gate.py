"""The relay's backlog cap (engine.relay.BacklogGate): when it asks the broker, and what it lets through."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from engine.channels import Priority, priority_queue
from engine.relay import BacklogGate

NORMAL, LOW = priority_queue(Priority.NORMAL), priority_queue(Priority.LOW)


class CountingBroker:
    """Answers ``ready`` from ``depth`` and counts the calls (the only method the gate uses)."""

    def __init__(self) -> None:
        self.depth = {NORMAL: 0, LOW: 0}
        self.asked = 0

    async def ready(self, queues: Sequence[str]) -> dict[str, int]:
        self.asked += 1
        return {q: self.depth[q] for q in queues}


def test_below_the_cap_rows_pass_without_asking_the_broker() -> None:
    gate, broker = BacklogGate(cap=10, recheck_s=0.0), CountingBroker()
    for _ in range(9):
        assert asyncio.run(gate.open(broker)) == (True, True)  # type: ignore[arg-type]
        gate.published(LOW, 1)
    assert broker.asked == 0 and not gate.holding


def test_at_the_cap_the_broker_is_asked_and_a_full_queue_is_held_alone() -> None:
    gate, broker = BacklogGate(cap=10, recheck_s=0.0), CountingBroker()
    gate.published(LOW, 12)
    broker.depth[LOW] = 11  # the senders took one
    assert asyncio.run(gate.open(broker)) == (True, False)  # type: ignore[arg-type]
    assert broker.asked == 1 and gate.holding
    broker.depth[LOW] = 3  # the senders caught up
    assert asyncio.run(gate.open(broker)) == (True, True)  # type: ignore[arg-type]
    assert broker.asked == 2 and not gate.holding
    gate.published(NORMAL, 10)
    broker.depth[NORMAL] = 10
    assert asyncio.run(gate.open(broker)) == (False, True)  # type: ignore[arg-type]


def test_while_holding_the_broker_is_asked_at_most_every_recheck() -> None:
    gate, broker = BacklogGate(cap=5, recheck_s=60.0), CountingBroker()
    gate.published(LOW, 5)
    broker.depth[LOW] = 5
    for _ in range(3):
        assert asyncio.run(gate.open(broker)) == (True, False)  # type: ignore[arg-type]
    assert broker.asked == 1


def test_a_cap_of_zero_never_holds_or_asks() -> None:
    gate, broker = BacklogGate(cap=0, recheck_s=0.0), CountingBroker()
    gate.published(LOW, 10_000)
    assert asyncio.run(gate.open(broker)) == (True, True)  # type: ignore[arg-type]
    assert broker.asked == 0 and not gate.holding
