"""Load against a running Herald: ``locust -f loadtests/locustfile.py --host http://127.0.0.1:8000``.

Needs HERALD_TOKEN (from ``herald token --tenant t_load``) and ``pip install -e '.[load]'``. Three kinds of
client, run together (or pick some: ``locust -f loadtests/locustfile.py SingleSender``):

- :class:`SingleSender`: one ``POST /api/notifications`` after another, each with a fresh idempotency key;
- :class:`BatchSender`: ``POST /api/batch`` with a JSON array of ``LOCUST_BATCH_SIZE`` (100) notifications,
  each carrying its own ``idempotency_key``;
- :class:`MixedService`: transactional one-time codes at high priority beside a marketing stream at low
  priority, 1:9.

``herald bench`` runs them headless for 10 s against the Herald it started (``--only locust``).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from locust import HttpUser, between, task

TOKEN = os.environ.get("HERALD_TOKEN", "")
BATCH_SIZE = int(os.environ.get("LOCUST_BATCH_SIZE", "100"))


def notification(email: str, *, priority: str = "normal", code: str = "123456") -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login",
        "locale": "en-GB",
        "to": {"email": email},
        "variables": {"code": code},
        "priority": priority,
    }


class _Herald(HttpUser):
    abstract = True
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.client.headers.update({"Authorization": f"Bearer {TOKEN}"})

    def post_one(self, body: dict[str, Any], name: str) -> None:
        self.client.post("/api/notifications", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}, name=name)


class SingleSender(_Herald):
    @task
    def single(self) -> None:
        self.post_one(notification(f"user{uuid.uuid4().hex[:8]}@example.com"), "single")


class BatchSender(_Herald):
    wait_time = between(0.05, 0.1)

    @task
    def batch(self) -> None:
        items = [
            {
                **notification(f"user{uuid.uuid4().hex[:8]}@example.com", priority="low"),
                "idempotency_key": uuid.uuid4().hex,
            }
            for _ in range(BATCH_SIZE)
        ]
        self.client.post("/api/batch", json=items, name=f"batch of {BATCH_SIZE}")


class MixedService(_Herald):
    @task(1)
    def otp(self) -> None:
        self.post_one(
            notification("otp@example.com", priority="high", code=f"{uuid.uuid4().int % 10**6:06d}"), "otp (high)"
        )

    @task(9)
    def campaign(self) -> None:
        self.post_one(notification(f"user{uuid.uuid4().hex[:8]}@example.com", priority="low"), "campaign (low)")
