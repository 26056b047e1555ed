"""The batch intake keeps the cyclic collector off while batches are checked and stored, and on otherwise."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from engine.batch.service import CollectorPause


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_it_is_off_while_any_batch_holds_it_and_on_after_the_last() -> None:
    pause = CollectorPause()
    first, second = pause.held(), pause.held()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()  # batches overlap
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_it_comes_back_on_when_the_batch_fails() -> None:
    pause = CollectorPause()
    with pytest.raises(RuntimeError), pause.held():
        raise RuntimeError("the store failed")
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    gc.disable()
    with CollectorPause().held():
        pass
    assert not gc.isenabled()


def test_batches_that_never_stop_overlapping_still_get_the_young_collected() -> None:
    now = [0.0]
    collected: list[int] = []
    pause = CollectorPause(max_off_s=2.0, clock=lambda: now[0], collect=collected.append)
    holding = pause.held()
    holding.__enter__()
    for step in range(6):  # each second a batch ends while the next is already in
        nxt = pause.held()
        nxt.__enter__()
        now[0] = step + 1.0
        holding.__exit__(None, None, None)
        holding = nxt
    assert collected == [1, 1, 1]  # every two seconds, young generations only
    assert not gc.isenabled()
    holding.__exit__(None, None, None)
    assert gc.isenabled()
