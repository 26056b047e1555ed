"""What a parsed JSON document may hold before Herald stores it: values PostgreSQL cannot store (strings
with NUL or an unpaired surrogate, numbers that are not finite) and nesting past :data:`MAX_JSON_DEPTH`,
found in one walk without recursion. The HTTP edge checks whole bodies with it, the batch route and the
ingress queue each item, so a bad item is its own error."""

from __future__ import annotations

import math
import re
from typing import Any

from engine.models import FieldError
from engine.problems import ApiProblem

#: Containers (objects and arrays) a JSON body may nest; no request Herald takes needs more than a few.
MAX_JSON_DEPTH = 64
#: An unpaired surrogate: UTF-8 cannot encode it, so neither can PostgreSQL (nor can it hold NUL).
_SURROGATE = re.compile("[\ud800-\udfff]")


def document_problem(doc: Any, *, max_depth: int = MAX_JSON_DEPTH) -> ApiProblem | None:
    """Why ``doc`` (a parsed JSON value) cannot be stored as it is, or None."""
    if type(doc) is not dict and type(doc) is not list:
        return _scalar_problem(doc, ())
    return _walk(doc, max_depth)


def _walk(doc: dict[str, Any] | list[Any], max_depth: int) -> ApiProblem | None:
    # Hot on large bodies: only non-empty containers go on the stack, scalars are judged in place by exact
    # type. A container at ``loc`` is ``len(loc) + 1`` levels deep.
    stack: list[tuple[dict[str, Any] | list[Any], tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        node, loc = stack.pop()
        items = node.items() if type(node) is dict else enumerate(node)  # type: ignore[union-attr]
        for key, value in items:
            if type(key) is str and _unstorable_text(key):
                return _unstorable((*loc, _printable(key)), "a key with a NUL character or an unpaired surrogate")
            kind = type(value)
            if kind is dict or kind is list:
                if len(loc) + 1 >= max_depth:
                    return too_deep(max_depth)
                if value:
                    stack.append((value, (*loc, key)))
            elif kind is str or kind is float:
                problem = _scalar_problem(value, (*loc, key))
                if problem is not None:
                    return problem
    return None


def _unstorable_text(text: str) -> bool:
    return "\x00" in text or (not text.isascii() and _SURROGATE.search(text) is not None)


def _scalar_problem(value: Any, loc: tuple[str | int, ...]) -> ApiProblem | None:
    if type(value) is str and _unstorable_text(value):
        return _unstorable(loc, "text with a NUL character or an unpaired surrogate, which cannot be stored")
    if type(value) is float and not math.isfinite(value):
        return _unstorable(loc, "not a finite number (JSON has no NaN or Infinity)")
    return None


def too_deep(limit: int) -> ApiProblem:
    return ApiProblem(400, f"the JSON body is nested deeper than {limit} levels")


def _unstorable(loc: tuple[str | int, ...], why: str) -> ApiProblem:
    return ApiProblem(422, "the request holds a value Herald cannot store", errors=[FieldError(("body", *loc), why)])


def _printable(key: str) -> str:
    """A key safe to echo in a JSON answer (an unpaired surrogate cannot be encoded as UTF-8)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
