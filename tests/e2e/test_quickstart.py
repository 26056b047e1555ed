"""The first Quickstart command's promise, as a new user runs it: ``herald demo`` on the embedded
defaults (no DATABASE_URL, AMQP_URL or REDIS_URL) sends a notification and shows it sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.quickstart, pytest.mark.integration]

HERALD = str(Path(sys.executable).with_name("herald"))


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL", "REDIS_URL", "RAY_ADDRESS")}
    env.update({"HERALD_DATA_DIR": str(data_dir), "HERALD_HTTP_PORT": str(free_port()), "HERALD_SENDERS": "1"})
    return env


def test_demo_on_embedded_defaults(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "herald")
    token = subprocess.run([HERALD, "token", "--tenant", "t_001"], env=env, capture_output=True, text=True, timeout=120)
    assert token.returncode == 0, token.stderr
    assert token.stdout.count(".") == 2  # a JWT, issued with no server running

    demo = subprocess.run([HERALD, "demo"], env=env, capture_output=True, text=True, timeout=300)
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-4000:]
    assert '"status": "sent"' in demo.stdout
    assert "Subject:" in demo.stdout and "384921" in demo.stdout
    assert "embedded postgres" in out and "postgres queue table" in out
    assert (tmp_path / "herald" / "console.jsonl").exists()
