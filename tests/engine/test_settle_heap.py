"""engine.runtime.settle_heap: what a process holds once started is left out of the collector's passes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from engine.runtime import settle_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the session collects as before


@pytest.mark.usefixtures("unfreeze")
def test_what_is_alive_leaves_the_generations_and_garbage_made_later_is_still_collected() -> None:
    held = [Node() for _ in range(100)]
    assert any(o is held for o in gc.get_objects())
    before = gc.get_freeze_count()

    settle_heap()

    assert gc.get_freeze_count() >= before + len(held)
    assert not any(o is held or o is held[0] for o in gc.get_objects())  # full passes no longer walk them
    later = Node()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None


@pytest.mark.usefixtures("unfreeze")
def test_garbage_of_start_up_is_collected_first_not_frozen() -> None:
    dropped = Node()
    gone = weakref.ref(dropped)
    del dropped

    settle_heap()

    assert gone() is None
