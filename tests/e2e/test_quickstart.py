"""The first Quickstart command's promise, as a new user runs it: ``herald demo`` on the embedded
defaults (no DATABASE_URL, AMQP_URL or REDIS_URL) sends a notification and shows it sent."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.quickstart, pytest.mark.integration]

HERALD = str(Path(sys.executable).with_name("herald"))


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AMQP_URL", "REDIS_URL", "RAY_ADDRESS")}
    env.update({"HERALD_DATA_DIR": str(data_dir), "HERALD_HTTP_PORT": str(free_port()), "HERALD_SENDERS": "1"})
    return env


@pytest.fixture
def data_dir() -> Path:
    """Outside pytest's 0700 temp root, which the embedded server's own user could not enter."""
    return Path(tempfile.mkdtemp(prefix="herald-qs-")) / "herald"


def test_demo_on_embedded_defaults(data_dir: Path) -> None:
    env = embedded_env(data_dir)
    token = subprocess.run([HERALD, "token", "--tenant", "t_001"], env=env, capture_output=True, text=True, timeout=120)
    assert token.returncode == 0, token.stderr
    assert token.stdout.count(".") == 2  # a JWT, issued with no server running

    demo = subprocess.run([HERALD, "demo"], env=env, capture_output=True, text=True, timeout=300)
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-4000:]
    assert '"status": "sent"' in demo.stdout
    assert "Subject:" in demo.stdout and "384921" in demo.stdout
    assert "embedded postgres" in out and "postgres queue table" in out
    assert (data_dir / "console.jsonl").exists()


def test_up_serves_sends_and_stops_cleanly_on_sigterm(data_dir: Path) -> None:
    import signal
    import time

    import httpx

    env = embedded_env(data_dir)
    port = env["HERALD_HTTP_PORT"]
    up = subprocess.Popen([HERALD, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/admin/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            time.sleep(0.5)
        send = subprocess.run(
            [HERALD, "send", "--tenant", "t_cli", "--channel", "sms", "--to", "+14155550199", "--var", "code=777111"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert send.returncode == 0, send.stdout + send.stderr
        assert '"status": "sent"' in send.stdout
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, out[-3000:]
    assert "stopping" in out
