"""Counters kept in memory and reconciled with a shared table in batches.

Each process adds to its own cells; a reconcile sends what was added since the last one (one statement
for every cell) and learns each cell's total across every process. Between reconciles a process sees
the last total plus what it added itself, so several processes can together pass a cap by what they
add between two reconciles; that is the price of no database call per request.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Amount = TypeVar("Amount", int, Decimal)


@dataclass(slots=True)
class _Cell(Generic[Amount]):
    settled: Amount  #: the table's total at the last reconcile (what this process sent included)
    inflight: Amount  #: sent in the reconcile under way
    pending: Amount  #: added here since

    @property
    def value(self) -> Amount:
        return self.settled + self.inflight + self.pending


class Tally(Generic[K, Amount]):
    def __init__(self, zero: Amount) -> None:
        self.zero = zero
        self._cells: dict[K, _Cell[Amount]] = {}
        self._reconciling = False

    def value(self, key: K) -> Amount:
        cell = self._cells.get(key)
        return cell.value if cell else self.zero

    def add(self, key: K, amount: Amount) -> None:
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell(self.zero, self.zero, self.zero)
        cell.pending += amount

    def watched(self, key: K) -> Amount:
        """:meth:`value`, and ``key`` kept in the reconciles from now on, so a key this process sees for the
        first time learns every other process's total with the next reconcile."""
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell(self.zero, self.zero, self.zero)
        return cell.value

    def track(self, key: K) -> None:
        """Keep ``key`` in the next reconcile even with nothing added (to learn other processes' counts)."""
        self.add(key, self.zero)

    def begin(self) -> dict[K, Amount]:
        """Every cell and what was added to it since the last reconcile; those amounts are in flight until
        :meth:`settle` or :meth:`abort`.

        Raises:
            RuntimeError: a reconcile is already under way (they must not overlap).
        """
        if self._reconciling:
            raise RuntimeError("a reconcile is already under way")
        self._reconciling = True
        batch = {}
        for key, cell in self._cells.items():
            cell.inflight, cell.pending = cell.pending, self.zero
            batch[key] = cell.inflight
        return batch

    def settle(self, totals: Mapping[K, Amount], *, keep: Callable[[K], bool] = lambda _: True) -> None:
        """The table's totals after the reconcile; cells ``keep`` refuses (ended windows) are dropped once
        nothing is pending in them."""
        for key, cell in list(self._cells.items()):
            if key in totals:
                cell.settled = totals[key]
                cell.inflight = self.zero
            if not keep(key) and cell.pending == self.zero and cell.inflight == self.zero:
                del self._cells[key]
        self._reconciling = False

    def abort(self) -> None:
        """The reconcile failed: what was in flight is pending again, for the next one."""
        for cell in self._cells.values():
            cell.pending += cell.inflight
            cell.inflight = self.zero
        self._reconciling = False
