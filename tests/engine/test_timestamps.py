"""Times callers give: aware, inside the calendar, and an unencoded + in a query string named as such."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.lifecycle.search import SearchFilters


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"created_after": "2026-12-01T10:00:00 00:00"}, "send it as %2B"),
        ({"recipient": " 14155552671"}, "send it as %2B"),
        ({"created_after": "0001-01-01T00:00:00+14:00"}, "must lie from 1000-01-01 up to 9000-01-01"),
        ({"created_before": "9999-12-31T23:59:59-14:00"}, "must lie from 1000-01-01 up to 9000-01-01"),
        ({"created_after": "2026-12-01T10:00:00"}, "timezone"),
    ],
)
def test_refused_with_the_reason(query: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SearchFilters.model_validate(query)
    assert says in str(caught.value)


def test_the_same_values_encoded_pass() -> None:
    f = SearchFilters.model_validate({"created_after": "2026-12-01T10:00:00+00:00", "recipient": "+14155552671"})
    assert f.recipient == "+14155552671" and f.created_after is not None and f.created_after.year == 2026
