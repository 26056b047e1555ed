"""The Quickstart's promises, as a new user meets them: ``herald demo`` and ``herald up`` on the embedded
defaults (no DATABASE_URL, AMQP_URL or REDIS_URL), and a stop that is quick and leaves nothing running."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.herald_process import (
    HeraldUp,
    describe,
    free_port,
    herald_env,
    new_data_dir,
    run_herald,
    token,
)

pytestmark = [pytest.mark.quickstart, pytest.mark.integration]

#: The promise: SIGTERM under load to the last process gone, embedded PostgreSQL included.
STOP_WITHIN_S = 15.0


def test_demo_on_embedded_defaults() -> None:
    data_dir = new_data_dir()
    env = herald_env(data_dir)
    issued = run_herald("token", "--tenant", "t_001", env=env)
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.count(".") == 2  # a JWT, issued with no server running

    codes = []
    for _ in range(2):  # a user trying it again at once: inside the auth category's 30 s dedupe window
        demo = run_herald("demo", env=env, timeout_s=300)
        out = demo.stdout + demo.stderr
        assert demo.returncode == 0, out[-4000:]
        assert '"status": "sent"' in demo.stdout
        assert "Subject:" in demo.stdout
        codes += re.findall(r"^\s+(\d{6})$", demo.stdout, flags=re.MULTILINE)
        assert "embedded postgres" in out and "postgres queue table" in out
        # Ray's console print of Serve's own shutdown call, which fails by design when the controller exits
        assert "(raylet)" not in out and "graceful_shutdown failed" not in out, out[-4000:]
        assert "will not be applied" not in out, out[-4000:]  # Serve's notice about a controller Herald started
        assert (data_dir / "console.jsonl").exists()
        assert not (data_dir / "pg" / "postmaster.pid").exists(), "the demo left its embedded PostgreSQL running"
    assert len(codes) == 2 and codes[0] != codes[1], codes  # each run's code is its own


@dataclass
class Load:
    """Threads POSTing notifications as fast as the API takes them, until stopped."""

    base_url: str
    token: str
    threads: int = 4
    accepted: list[str] = field(default_factory=list)
    attempts: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    running: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.running = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for thread in self.running:
            thread.start()
        return self

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = {"channel": "email", "template_id": "otp_login", "to": {"email": "load@example.com"}}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=5) as client:
            while not self.stopping.is_set():
                self.attempts += 1
                try:
                    r = client.post(
                        "/api/notifications",
                        json={**body, "variables": {"code": "123456"}},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                    if r.status_code == 202:
                        self.accepted.append(r.json()["message_id"])
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is going away: keep offering, a little slower

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.running:
            thread.join(timeout=10)


def test_up_serves_sends_and_stops_within_15s_under_load() -> None:
    """The hard case: the sender is stuck in a provider call (an SMTP server that never greets), so the
    email offered meanwhile queues up behind it, and requests keep arriving while Herald stops."""
    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", free_port()))
    tarpit.listen()  # connections complete, nothing ever answers
    smtp = {"HERALD_SMTP_HOST": "127.0.0.1", "HERALD_SMTP_PORT": str(tarpit.getsockname()[1])}
    env = herald_env(new_data_dir(), HERALD_EMAIL_PROVIDERS="smtp", HERALD_SMTP_STARTTLS="false", **smtp)
    up = HeraldUp(env).start()
    load = None
    try:
        up.wait_healthy()
        send = run_herald(
            "send", "--tenant", "t_cli", "--channel", "sms", "--to", "+447911123456", "--var", "code=777111", env=env
        )
        assert send.returncode == 0, send.stdout + send.stderr
        assert '"status": "sent"' in send.stdout
        refused = run_herald("send", "--tenant", "t_cli", "--to", "+447700900123", "--var", "code=1", env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr  # a drama range: 422 on to.phone
        assert "-> 422" in refused.stdout and '"phone"' in refused.stdout

        bearer = token(env, "t_load")
        load = Load(up.base_url, bearer).start()
        deadline = time.monotonic() + 60
        while len(load.accepted) < 300 and time.monotonic() < deadline:
            time.sleep(0.2)
        newest = load.accepted[-1]
        status = httpx.get(
            f"{up.base_url}/api/notifications/{newest}", headers={"Authorization": f"Bearer {bearer}"}, timeout=5
        ).json()["status"]
        attempts_at_stop = load.attempts

        code, seconds = up.stop()
        offered_during_stop = load.attempts - attempts_at_stop
    finally:
        if load is not None:
            load.stop()
        left = describe(up.alive())
        up.kill_everything()
        tarpit.close()
    out = up.output()
    assert status in ("queued", "sending"), status  # work was queued when the stop came
    assert offered_during_stop > 0  # and requests kept arriving while it stopped
    assert code == 0, out[-3000:]
    assert not left, f"left running: {left}"
    assert seconds <= STOP_WITHIN_S, f"stop took {seconds:.1f}s:\n{out[-3000:]}"
    assert "stopping" in out and "stopped in" in out
    print(f"SIGTERM under load: {len(load.accepted)} accepted, every process gone in {seconds:.1f}s")
