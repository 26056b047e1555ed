"""``herald up`` around a crash and a busy port: recovering a data directory after SIGKILL, and failing
fast, naming the port, when the HTTP port is taken."""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import pytest

from tests.support.herald_process import HeraldUp, describe, free_port, herald_env, new_data_dir, run_herald, token

pytestmark = [pytest.mark.quickstart, pytest.mark.integration]


def test_up_after_sigkill_recovers_the_same_data_dir() -> None:
    env = herald_env(new_data_dir())
    first = HeraldUp(env).start()
    second = HeraldUp(env)
    try:
        first.wait_healthy()
        bearer = token(env, "t_crash")
        headers = {"Authorization": f"Bearer {bearer}"}
        with httpx.Client(base_url=first.base_url, headers=headers, timeout=10) as api:
            r = api.post(
                "/api/notifications",
                json={
                    "channel": "email",
                    "template_id": "otp_login",
                    "to": {"email": "crash@example.com"},
                    "variables": {"code": "424242"},
                },
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert r.status_code == 202, r.text
            message_id = r.json()["message_id"]
        first.kill()
        orphans = {p.name() for p in first.alive()}
        assert "postgres" in orphans, orphans  # the embedded server outlives a killed herald

        second.start().wait_healthy()
        out = second.output()
        assert "did not stop cleanly" in out, out[-3000:]
        assert "dropped the handles of exited processes" in out and "reusing the server" in out
        assert not [p for p in describe(first.alive()) if "postgres" not in p], "leftovers of the killed run"
        with httpx.Client(base_url=second.base_url, headers=headers, timeout=10) as api:
            view = api.get(f"/api/notifications/{message_id}")
        assert view.status_code == 200 and view.json()["status"] in ("queued", "sending", "sent")

        third = run_herald("up", env={**env, "HERALD_HTTP_PORT": str(free_port())}, timeout_s=60)
        assert third.returncode == 2 and f"another herald (pid {second.pid})" in third.stderr

        code, _ = second.stop()
    finally:
        left = describe([*second.alive(), *first.alive()])
        second.kill_everything()
        first.kill_everything()
    assert code == 0, second.output()[-3000:]
    assert not left, f"left running: {left}"
    assert not (second.data_dir / "herald.pid").exists()


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so_reuseport"])
def test_up_fails_fast_naming_a_taken_port(reuse_port: bool) -> None:
    """A listener with SO_REUSEPORT (another Herald's Serve proxy binds that way) counts as taken too."""
    data_dir = new_data_dir()
    env = herald_env(data_dir)
    port = int(env["HERALD_HTTP_PORT"])
    with socket.socket() as taken:
        if reuse_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        began = time.monotonic()
        result = run_herald("up", env=env, timeout_s=60)
        spent = time.monotonic() - began
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"HERALD_HTTP_PORT={port}" in result.stderr and "Traceback" not in result.stderr
    assert spent < 15, f"took {spent:.1f}s to refuse"
    assert not (data_dir / "pg").exists()  # nothing was started
    assert not (data_dir / "herald.pid").exists()
