"""Instants callers give (schedules, filters, expiries): with a timezone, and inside the calendar.

Python's datetime ends at the years 1 and 9999: a time near either end that is moved to UTC, or has a
TTL added, overflows, and PostgreSQL stores 9999-12-31T23:59:59.999999Z as ``infinity``. An
:data:`Instant` is refused (a field error, 422) outside the years 1000 to 8999 in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def within_calendar(value: datetime) -> datetime:
    """``value`` unchanged when it lies from :data:`EARLIEST` up to (not including) :data:`LATEST`.

    Raises:
        ValueError: it does not (pydantic makes it the field's error).
    """
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"must lie from {EARLIEST:%Y-%m-%d} up to {LATEST:%Y-%m-%d} (UTC)")
    return value


def _plus_as_space(value: object) -> object:
    """A query string's unencoded + arrives as a space: ``...T10:00:00 00:00`` would be 'invalid'."""
    if isinstance(value, str) and re.search(r"T[\d:.]+ \d{2}:?\d{2}$", value):
        raise ValueError("the + of the offset reached us as a space: send it as %2B in a query string")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_plus_as_space), AfterValidator(within_calendar)]
