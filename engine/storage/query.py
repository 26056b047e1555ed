"""A small builder for the few statements whose WHERE clause depends on the filters a caller gave.

Conditions are fixed SQL fragments written in the store modules; only values travel, as numbered
parameters, so nothing a caller sends is ever spliced into SQL text.
"""

from __future__ import annotations

from typing import Any


class Conditions:
    """``AND``-ed conditions and their parameters: ``where("m.channel = {}", "email")`` adds
    ``m.channel = $1``. Each ``{}`` takes the next value."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self._parts: list[str] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def where(self, fragment: str, *values: Any) -> None:
        self._parts.append(fragment.format(*(self.param(v) for v in values)))

    def sql(self) -> str:
        return " AND ".join(self._parts) if self._parts else "TRUE"
