"""A batch body split into its items: a JSON array, or NDJSON (one notification per line).

A body that is not a batch at all (not an array, not JSON, more than the item limit) is refused whole;
a single line of NDJSON that does not parse is that item's error, and the other lines go on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.models import FieldError
from engine.problems import ApiProblem

#: Items one batch may hold.
MAX_ITEMS = 10_000
NDJSON_CONTENT_TYPE = "application/x-ndjson"
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"})

#: What the edge finds wrong with one parsed item before the engine reads it (values PostgreSQL cannot
#: store, nesting too deep), as a problem whose errors are located from the item's root; None when fine.
Screen = Callable[[Any], ApiProblem | None]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An item refused before validation, with its errors (located under ``body.<index>``)."""

    errors: tuple[FieldError, ...]


def is_ndjson(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() in NDJSON_TYPES


def split_items(
    body: bytes, content_type: str | None, *, max_items: int = MAX_ITEMS, screen: Screen | None = None
) -> list[Any]:
    """The items of a batch body: each a parsed JSON value or :class:`Unreadable`.

    Raises:
        ApiProblem: 400 (not JSON, nested too deep), 422 (not an array, empty, more than ``max_items``).
    """
    if is_ndjson(content_type):
        lines = [line for line in body.split(b"\n") if line.strip()]
        _check_count(len(lines), max_items)
        items = [_line(i, line) for i, line in enumerate(lines)]
    else:
        try:
            doc = json.loads(body)
        except RecursionError:
            raise ApiProblem(400, "the JSON body is nested too deeply") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiProblem(400, "the body is not valid JSON (an array, or NDJSON as application/x-ndjson)") from None
        except ValueError:
            raise ApiProblem(400, "the JSON body holds an integer too long to read") from None
        if not isinstance(doc, list):
            raise ApiProblem(
                422,
                "the body must be a JSON array of notifications",
                errors=[FieldError(("body",), "expected an array", "list_type")],
            )
        _check_count(len(doc), max_items)
        items = doc
    if screen is not None:
        items = [_screened(i, item, screen) for i, item in enumerate(items)]
    return items


def _check_count(n: int, max_items: int) -> None:
    if n == 0:
        raise ApiProblem(422, "the batch is empty", errors=[FieldError(("body",), "at least one notification")])
    if n > max_items:
        raise ApiProblem(
            422,
            f"a batch holds at most {max_items} notifications ({n} sent)",
            errors=[FieldError(("body",), f"at most {max_items} items", "too_long")],
        )


def _line(index: int, line: bytes) -> Any:
    try:
        return json.loads(line)
    except RecursionError:
        return Unreadable((FieldError(("body", index), "nested too deeply", "json_invalid"),))
    except (ValueError, UnicodeDecodeError):
        return Unreadable((FieldError(("body", index), "this line is not valid JSON", "json_invalid"),))


def _screened(index: int, item: Any, screen: Screen) -> Any:
    if isinstance(item, Unreadable):
        return item
    problem = screen(item)
    if problem is None:
        return item
    errors = problem.errors or [FieldError((), problem.detail)]
    return Unreadable(tuple(FieldError(("body", index, *_under_body(e.loc)), e.msg, e.type) for e in errors))


def _under_body(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return loc[1:] if loc and loc[0] == "body" else loc
