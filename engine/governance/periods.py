"""UTC calendar periods: the minute, day and month a moment falls in, and when each ends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Period(StrEnum):
    MINUTE = "minute"
    DAY = "day"
    MONTH = "month"

    @property
    def quota_key(self) -> str:
        """The key of ``limits.<channel>`` that caps this period (``per_day``)."""
        return _QUOTA_KEYS[self]


_QUOTA_KEYS = {p: f"per_{p.value}" for p in Period}


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """One calendar period: ``start`` inclusive, ``end`` exclusive, both aware UTC."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    def seconds_left(self, now: datetime) -> float:
        return max(0.0, (self.end - now).total_seconds())


def window_of(period: Period, at: datetime) -> Window:
    """The UTC calendar ``period`` that ``at`` (aware) falls in.

    Raises:
        ValueError: ``at`` is naive (a moment without a zone has no calendar period).
    """
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no UTC calendar period")
    at = at.astimezone(UTC)
    if period is Period.MINUTE:
        start = at.replace(second=0, microsecond=0)
        return Window(start, start + timedelta(minutes=1))
    if period is Period.DAY:
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(start, start + timedelta(days=1))
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return Window(start, end)


class CalendarWindows:
    """The minute, day and month a moment falls in, worked out once per minute (admission asks for them
    on every request; every window changes only when the minute does)."""

    def __init__(self) -> None:
        self._minute: Window | None = None
        self._windows: dict[Period, Window] = {}

    def at(self, now: datetime) -> dict[Period, Window]:
        minute = self._minute
        if minute is None or not minute.start <= now < minute.end:
            self._windows = {p: window_of(p, now) for p in Period}
            self._minute = self._windows[Period.MINUTE]
        return self._windows


def utcnow() -> datetime:
    return datetime.now(UTC)
