"""The benchmarks' CPU split (``loadtests.cpu``) counts what each named process spent, and only that."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from loadtests.cpu import CpuMeter, describe, per_unit_ms

#: 0.3 s of CPU, then idle until stdin closes (alive when the meter reads it).
BURN = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nsys.stdin.read()"
IDLE = "import sys\nsys.stdin.read()"


def test_a_named_process_is_charged_with_the_cpu_it_spent_and_an_idle_one_with_none() -> None:
    busy = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE)
    idle = subprocess.Popen([sys.executable, "-c", IDLE], stdin=subprocess.PIPE)
    try:
        meter = CpuMeter({busy.pid: "busy", idle.pid: "idle"})
        meter.start()
        deadline = time.monotonic() + 20
        used = meter.stop()
        while used.get("busy", 0.0) < 0.2 and time.monotonic() < deadline:
            time.sleep(0.05)
            used = meter.stop()
        assert used.get("busy", 0.0) >= 0.2, used
        assert used.get("idle", 0.0) < 0.05, used
        assert set(used) <= {"busy", "idle", "postgres", "rabbitmq", "haproxy"}  # nothing unnamed counted
    finally:
        for p in (busy, idle):
            p.communicate(b"", timeout=10)


def test_the_split_per_unit_and_its_line() -> None:
    per = per_unit_ms({"senders": 0.3, "postgres": 0.2, "relay": 0.0001}, 1000)
    assert per == {"senders": 0.3, "postgres": 0.2, "relay": 0.0}
    assert describe(per) == f"CPU per message: senders 0.30 ms, postgres 0.20 (0.50 ms in all, {os.cpu_count()} cores)"
    assert describe({}, "request") == "CPU per request: not measured"
