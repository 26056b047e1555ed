"""The ``herald`` commands as a user types them, where they cannot work: one line naming why, exit 2.

``herald send``'s inference of the channel and its exit status are here too."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.support.herald_process import HeraldUp, describe, free_port, herald_env, new_data_dir, run_herald


def _unreachable_database() -> str:
    """Nothing listens here (a port just found free)."""
    return f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/herald"


def test_no_herald_listening_is_one_line_naming_the_address() -> None:
    env = herald_env(new_data_dir())
    sent = run_herald("send", "--to", "ada@example.com", "--var", "code=123456", env=env, timeout_s=60)
    assert sent.returncode == 2, sent.stdout + sent.stderr
    assert f"no Herald answers at http://127.0.0.1:{env['HERALD_HTTP_PORT']}" in sent.stderr
    assert "herald up" in sent.stderr
    assert "Traceback" not in sent.stderr


def test_an_address_of_no_known_shape_needs_its_channel() -> None:
    env = herald_env(new_data_dir())
    sent = run_herald("send", "--to", "device-token-1", env=env, timeout_s=60)
    assert sent.returncode == 2
    assert "name its --channel" in sent.stderr and "Traceback" not in sent.stderr


def test_a_variable_without_a_value_is_refused() -> None:
    env = herald_env(new_data_dir())
    sent = run_herald("send", "--to", "ada@example.com", "--var", "code", env=env, timeout_s=60)
    assert sent.returncode == 2
    assert "--var 'code': give it as NAME=VALUE" in sent.stderr


def test_the_channel_follows_the_address() -> None:
    from serve_app.cli import _payload, build_parser

    def body(*argv: str) -> dict[str, object]:
        return _payload(build_parser().parse_args(["send", *argv]))

    assert body("--to", "ada@example.com")["channel"] == "email"
    assert body("--to", "+14155552671") == {
        "channel": "sms",
        "template_id": "otp_login",
        "to": {"phone": "+14155552671"},
        "variables": {},
        "priority": "normal",
    }
    assert body("--to", "+14155552671", "--channel", "whatsapp")["to"] == {"phone": "+14155552671"}
    assert body("--to", "u_42", "--channel", "inapp")["to"] == {"user_id": "u_42"}


def test_a_tenant_slug_of_the_wrong_shape_is_named_before_any_database() -> None:
    env = herald_env(new_data_dir(), DATABASE_URL=_unreachable_database())
    issued = run_herald("token", "--tenant", "Bad Slug", env=env, timeout_s=60)
    assert issued.returncode == 2
    assert "--tenant 'Bad Slug': a tenant's slug matches" in issued.stderr and "Traceback" not in issued.stderr


@pytest.mark.parametrize("command", [("migrate",), ("token", "--tenant", "t_001")])
def test_an_unreachable_database_is_one_line_with_its_masked_url(command: tuple[str, ...]) -> None:
    url = _unreachable_database()
    env = herald_env(new_data_dir(), DATABASE_URL=url)
    done = run_herald(*command, env=env, timeout_s=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot connect to the database at postgresql://postgres:***@127.0.0.1:" in done.stderr
    assert "(DATABASE_URL)" in done.stderr
    assert "s3cret-pw" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.quickstart
@pytest.mark.integration
def test_up_on_an_unreachable_database_exits_2_naming_it_and_leaves_nothing() -> None:
    up = HeraldUp(herald_env(new_data_dir(), DATABASE_URL=_unreachable_database())).start()
    try:
        assert up.proc is not None
        deadline = time.monotonic() + 120
        while up.proc.poll() is None and time.monotonic() < deadline:
            up.track()  # Ray starts beside the database's check
            time.sleep(0.2)
        code = up.proc.wait(timeout=5)
        psutil.wait_procs(up.alive(), timeout=15)
        left = describe(up.alive())
    finally:
        up.kill_everything()
    out = up.output()
    assert code == 2, out[-3000:]
    assert "herald: cannot connect to the database at postgresql://postgres:***@127.0.0.1:" in out
    assert "Traceback" not in out and "s3cret-pw" not in out
    assert not left, f"left running: {left}"


def test_a_token_lasts_the_days_asked_for() -> None:
    import jwt

    env = herald_env(new_data_dir(), DATABASE_URL=_unreachable_database())  # a platform token needs none
    issued = run_herald("token", "--platform", "--days", "365", env=env, timeout_s=60)
    assert issued.returncode == 0, issued.stderr
    claims = jwt.decode(issued.stdout.strip(), options={"verify_signature": False})
    assert claims["scope"] == "platform"
    assert claims["exp"] - claims["iat"] == 365 * 86400
    refused = run_herald("token", "--platform", "--days", "0", env=env, timeout_s=60)
    assert refused.returncode == 2 and "--days 0" in refused.stderr
