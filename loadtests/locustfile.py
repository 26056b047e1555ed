"""Load against a running Herald: `locust -f loadtests/locustfile.py --host http://127.0.0.1:8000`.

Needs HERALD_TOKEN (from `herald token --tenant t_load`). Transactional OTPs at high priority beside a
marketing-style low-priority stream, 1:9.
"""

from __future__ import annotations

import os
import uuid

from locust import HttpUser, between, task

TOKEN = os.environ.get("HERALD_TOKEN", "")


class Service(HttpUser):
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.client.headers.update({"Authorization": f"Bearer {TOKEN}"})

    def _post(self, priority: str, email: str, name: str) -> None:
        body = {
            "channel": "email",
            "template_id": "otp_login",
            "locale": "en-GB",
            "to": {"email": email},
            "variables": {"code": "123456"},
            "priority": priority,
        }
        self.client.post("/api/notifications", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}, name=name)

    @task(1)
    def otp(self) -> None:
        self._post("high", "otp@example.com", "otp (high)")

    @task(9)
    def campaign(self) -> None:
        self._post("low", f"user{uuid.uuid4().hex[:8]}@example.com", "campaign (low)")
