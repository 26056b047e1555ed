"""CPU time by part, over a benchmark's measured span: what a throughput figure is bound by.

On a machine whose cores the whole pipeline shares, a figure is bound by the CPU each message costs all
the processes it passes through. :class:`CpuMeter` reads every process's CPU time (user and system)
before and after the span and sums the difference by part: the processes a benchmark names, and the
PostgreSQL and RabbitMQ servers of the machine (their processes found by name: on a shared machine they
include whatever else those servers did meanwhile).
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Mapping

import psutil

#: Part names of the machine's servers, by process name.
SERVERS = {"postgres": "postgres", "beam.smp": "rabbitmq", "haproxy": "haproxy"}


def process_name(process: psutil.Process) -> str:
    """Ray's workers name themselves ``ray::<Actor>`` in their command line (the process name is cut at 15)."""
    with contextlib.suppress(psutil.Error):
        cmdline = process.cmdline()
        if cmdline and cmdline[0].startswith("ray::"):
            return cmdline[0].split(".", 1)[0]
    with contextlib.suppress(psutil.Error):
        return process.name()
    return "?"


def _times() -> dict[int, tuple[str, float]]:
    seen = {}
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            t = process.cpu_times()
            seen[process.pid] = (process_name(process), t.user + t.system)
    return seen


class CpuMeter:
    """``parts``: part name by pid, for the benchmark's own processes (the servers are found by name;
    other processes are not counted)."""

    def __init__(self, parts: Mapping[int, str]) -> None:
        self.parts = dict(parts)
        self._before: dict[int, tuple[str, float]] = {}

    def start(self) -> None:
        self._before = _times()

    def stop(self) -> dict[str, float]:
        """CPU seconds each part used since :meth:`start` (processes alive at both ends; call it before
        the benchmark's processes exit)."""
        used: dict[str, float] = defaultdict(float)
        for pid, (name, seconds) in _times().items():
            part = self.parts.get(pid) or SERVERS.get(name)
            if part is None:
                continue
            _, earlier = self._before.get(pid, (name, 0.0))
            used[part] += max(0.0, seconds - earlier)
        return dict(sorted(used.items(), key=lambda kv: -kv[1]))


def per_unit_ms(used: Mapping[str, float], units: int) -> dict[str, float]:
    """Milliseconds of CPU per message (or request), by part."""
    return {part: round(1000 * seconds / max(1, units), 3) for part, seconds in used.items()}


def describe(per_unit: Mapping[str, float], unit: str = "message") -> str:
    """``CPU per message: senders 0.18 ms, postgres 0.17, ...`` (parts under 0.005 ms left out)."""
    shown = [(p, ms) for p, ms in per_unit.items() if ms >= 0.005]
    if not shown:
        return f"CPU per {unit}: not measured"
    total = sum(ms for _, ms in shown)
    head, *rest = shown
    parts = ", ".join([f"{head[0]} {head[1]:.2f} ms", *(f"{p} {ms:.2f}" for p, ms in rest)])
    return f"CPU per {unit}: {parts} ({total:.2f} ms in all, {os.cpu_count()} cores)"
