"""``herald bench`` keeps working: its smallest run starts Herald and both P1 baselines, prints a row per
figure, and stops every process it started. Not timed: the figures themselves are not asserted."""

from __future__ import annotations

import os
import shutil
import subprocess

import psutil
import pytest

from tests.support.herald_process import HERALD

pytestmark = [pytest.mark.quickstart, pytest.mark.integration]

SMALL_BATCHES = ("--n", "500", "--batch-size", "250")


def test_bench_prints_p1_p2_and_p3_beside_their_baselines() -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (apt-get install -y wrk)")
    before = {p.pid for p in psutil.process_iter()}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [HERALD, "bench", "--duration", "1", "--connections", "4", "--only", "p1,p2,p3", *SMALL_BATCHES],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("P1 accept, 4 connections"))
    assert "req/s | bare FastAPI+asyncpg" in row and "| no-op Serve app" in row, row
    assert "CPU per request: " in row and "api replica" in row and "postgres" in row, row  # what bounds it
    p2 = _row(done.stdout, "P2 batch accept")
    assert "items/s | raw asyncpg COPY of the same rows" in p2, p2
    p3 = _row(done.stdout, "P3 end to end")
    if os.environ.get("AMQP_URL"):
        assert "msgs/s | Celery pipeline" in p3 and "rows written per message" in p3, p3
        assert "CPU per message: " in p3 and "senders" in p3 and "batch intake" in p3, p3
    else:
        assert "not available: P3 runs on RabbitMQ" in p3, p3
    left = [p for p in psutil.process_iter(["name", "cmdline"]) if p.pid not in before and _ours(p)]
    assert not left, [f"{p.pid} {p.info['name']}" for p in left]


def _row(stdout: str, figure: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(figure))


def _ours(process: psutil.Process) -> bool:
    """A process a bench run starts (Ray's, HAProxy, uvicorn's bare app), by its command line."""
    try:
        cmdline = " ".join(process.info["cmdline"] or [])
        return "herald-bench-" in cmdline or "loadtests." in cmdline
    except psutil.Error:
        return False
