"""Per-render limits and the state one render carries (budget, links made, notes).

The state lives in a context variable for the duration of one ``catalog.render`` call, so the sandbox
hooks, the loop guard, ``link()`` and the Babel filters reach it without it being a template variable
(templates cannot see or forge it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

from .context import RenderContext


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Bounds on one render. ``None`` disables a bound.

    ``max_output_chars`` applies to each part and is enforced while streaming; ``max_steps`` counts loop
    iterations and calls (macros, methods, helpers) across all parts; ``time_limit_s`` is wall time
    across all parts.

    Sends have no wall-time bound by default: a published template is already bounded by steps and
    output, and wall time depends on how loaded the machine is, so a deadline would fail good messages
    permanently under load. Drafts and previews, which may still run away, get :data:`PREVIEW_LIMITS`.
    """

    max_output_chars: int = 256_000
    time_limit_s: float | None = None
    max_steps: int | None = 200_000


#: Limits for renders of templates a tenant is still writing (preview, publish checks).
PREVIEW_LIMITS = RenderLimits(max_output_chars=256_000, time_limit_s=0.5, max_steps=100_000)


class RenderAborted(Exception):
    """A limit stopped the render. ``code`` is the RenderError code to report."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_CHECK_CLOCK_EVERY = 64  # steps between clock reads: a step is ~0.1-1 us, a clock read ~50 ns


class Budget:
    """Counts steps and watches the deadline of one render."""

    __slots__ = ("_deadline", "_limits", "_steps", "_tick")

    def __init__(self, limits: RenderLimits) -> None:
        self._limits = limits
        self._steps = 0
        self._tick = 0
        self._deadline = None if limits.time_limit_s is None else time.monotonic() + limits.time_limit_s

    def step(self) -> None:
        self._steps += 1
        limit = self._limits.max_steps
        if limit is not None and self._steps > limit:
            raise RenderAborted("render_budget", f"the template ran more than {limit} loop iterations and calls")
        self._tick += 1
        if self._tick >= _CHECK_CLOCK_EVERY:
            self._tick = 0
            self.check_clock()

    def check_clock(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise RenderAborted(
                "render_timeout", f"the render took longer than its {self._limits.time_limit_s}s time limit"
            )


@dataclass(slots=True)
class RenderState:
    """What one render accumulates: its budget, the tracked links it made and notes for preview."""

    budget: Budget
    context: RenderContext
    links: dict[str, int] = field(default_factory=dict)  #: original url -> link index
    made: dict[str, str] = field(default_factory=dict)  #: original url -> what link() produced
    notes: list[str] = field(default_factory=list)


_STATE: ContextVar[RenderState | None] = ContextVar("herald_render_state", default=None)


def current_state() -> RenderState | None:
    return _STATE.get()


@contextmanager
def rendering(state: RenderState) -> Iterator[RenderState]:
    token = _STATE.set(state)
    try:
        yield state
    finally:
        _STATE.reset(token)


class _Guarded:
    """An iterator that spends one budget step per item (loops and ``range``)."""

    __slots__ = ("_budget", "_it")

    def __init__(self, iterable: Iterable[Any], budget: Budget) -> None:
        self._it = iter(iterable)
        self._budget = budget

    def __iter__(self) -> _Guarded:
        return self

    def __next__(self) -> Any:
        self._budget.step()
        return next(self._it)


def guard(iterable: Iterable[Any]) -> Iterable[Any]:
    state = _STATE.get()
    if state is None or isinstance(iterable, _Guarded):
        return iterable
    return _Guarded(iterable, state.budget)


@pass_context  # pass_context also keeps the compiler from folding it into a constant
def guard_loop(_context: Context, iterable: Iterable[Any]) -> Iterable[Any]:
    """Wrapped around every ``{% for %}`` iterable by the sandbox's compile step."""
    return guard(iterable)


def guarded_range(*args: int) -> Iterable[int]:
    """``range`` for templates: lazy and budgeted, so ``range(10**9)`` stops at the render's limits."""
    return guard(range(*args))
