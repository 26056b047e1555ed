"""``herald up --fake-providers`` as the README walks through it: every channel through its real driver to
the local emulator, the emulators' delivery reports back through Herald's webhooks (wired by the command
alone), then a clean stop."""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.herald_process import HeraldUp, describe, herald_env, new_data_dir, token

pytestmark = [pytest.mark.quickstart, pytest.mark.integration]

FCM_TOKEN = "fcm-registration-token-" + "f" * 100
APNS_TOKEN = "b" * 64

#: (what, body, provider that must send it, emulator setting whose ``/_received`` shows it, text sent)
SENDS: list[tuple[str, dict[str, Any], str, str | None, str]] = [
    ("email", {"channel": "email", "template_id": "otp_login", "to": {"email": "fp.email@example.com"},
               "variables": {"code": "510001"}}, "ses", None, "510001"),
    ("sms", {"channel": "sms", "template_id": "otp_login", "to": {"phone": "+447911123456"},
             "variables": {"code": "510002"}}, "twilio", "HERALD_TWILIO_BASE_URL", "510002"),
    ("push fcm", {"channel": "push", "template_id": "otp_login:v3",
                  "to": {"push": {"platform": "fcm", "token": FCM_TOKEN}}, "variables": {"code": "510003"}},
     "fcm", "HERALD_FCM_BASE_URL", "510003"),
    ("push apns", {"channel": "push", "template_id": "otp_login:v3",
                   "to": {"push": {"platform": "apns", "token": APNS_TOKEN}}, "variables": {"code": "510004"}},
     "apns", None, "510004"),
    ("whatsapp", {"channel": "whatsapp", "template_id": "security_alert", "to": {"phone": "+447911123457"},
                  "variables": {"device": "Pixel 510005", "location": "Leeds"}}, "meta", "HERALD_META_BASE_URL",
     "Pixel 510005"),
    ("inapp", {"channel": "inapp", "template_id": "security_alert", "to": {"user_id": "fp-user-1"},
               "variables": {"device": "Laptop 510006"}}, "store", None, "Laptop 510006"),
]  # fmt: skip
#: Where each send ends: the providers that report deliveries do, through their webhook; the rest stay sent.
FINAL = {"email": "delivered", "sms": "delivered", "whatsapp": "delivered"}


@pytest.fixture
def database_env() -> Iterator[dict[str, str]]:
    """DATABASE_URL's server when set (a fresh database on it), else the embedded default."""
    server = os.environ.get("DATABASE_URL")
    if not server:
        yield {}
        return
    from tests.conftest import fresh_database

    databases = fresh_database(server)
    yield {"DATABASE_URL": next(databases)}
    next(databases, None)  # drops it


def fake_settings(up: HeraldUp) -> dict[str, str]:
    lines = (up.data_dir / "fakes.env").read_text().splitlines()
    pairs = (shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines if line.strip())
    return {name: value for name, value in pairs}


def test_up_with_fake_providers_sends_on_every_channel(database_env: dict[str, str]) -> None:
    up = HeraldUp(herald_env(new_data_dir(), **database_env), args=("--fake-providers",)).start()
    views: dict[str, dict[str, Any]] = {}
    try:
        up.wait_healthy()
        fakes = fake_settings(up)
        # Approve the WhatsApp template at the emulated Meta account, as a tenant does in Meta's console.
        approval = {"templates": {"security_alert": {"en_GB": 2}}}
        assert httpx.post(f"{fakes['HERALD_META_BASE_URL']}/_state", json=approval, timeout=10).status_code == 200
        headers = {"Authorization": f"Bearer {token(up.env, 't_fakes')}"}
        with httpx.Client(base_url=up.base_url, headers=headers, timeout=10) as api:
            ids = {}
            for what, body, _, _, _ in SENDS:
                r = api.post("/api/notifications", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
                assert r.status_code == 202, (what, r.text)
                ids[what] = r.json()["message_id"]
            deadline = time.monotonic() + 60
            while len(views) < len(ids) and time.monotonic() < deadline:
                for what, message_id in ids.items():
                    view = api.get(f"/api/notifications/{message_id}").json()
                    settled = view["status"] not in ("queued", "sending", "sent")
                    if settled or view["status"] == FINAL.get(what, "sent"):
                        views[what] = view
                time.sleep(0.3)
            inbox = api.get("/api/inbox/fp-user-1").json()["items"]
        received = {
            setting: json.dumps(httpx.get(f"{fakes[setting]}/_received", timeout=10).json())
            for _, _, _, setting, _ in SENDS
            if setting
        }
        code, _ = up.stop()
    finally:
        left = describe(up.alive())
        up.kill_everything()
    for what, _, provider, setting, text in SENDS:
        view = views.get(what, {})
        errors = [a["error"] for a in view.get("attempts", [])]
        assert view.get("status") == FINAL.get(what, "sent"), (what, view.get("status"), errors)
        assert view["provider"] == provider and view["provider_message_id"], (what, view)
        if setting:
            assert text in received[setting], (what, received[setting][-1500:])
    assert [item["message_id"] for item in inbox] == [views["inapp"]["message_id"]]
    assert code == 0, up.output()[-3000:]
    assert not left, f"left running: {left}"
