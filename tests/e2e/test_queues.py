"""The relay actor's queues view and the queue gauges on the running stack (the broker it was given)."""

from __future__ import annotations

import time

import pytest
import ray

from engine.channels import ALL_QUEUES, DLQ_QUEUES
from tests.e2e.conftest import Herald

pytestmark = pytest.mark.ray


def test_the_relay_reports_every_queue_with_its_consumers_and_ships_the_gauges(herald: Herald) -> None:
    snapshot = ray.get(herald.stack.relay.queues.remote())
    queues = {q["queue"]: q for q in snapshot["queues"]}
    assert set(queues) == set(ALL_QUEUES) and snapshot["broker"] in ("rabbitmq", "postgres-queue")
    assert all(queues[q]["consumers"] >= 1 for q in ALL_QUEUES if q not in DLQ_QUEUES)  # the senders
    assert {queues[q]["consumers"] for q in DLQ_QUEUES} == {0}
    assert "due" in snapshot["outbox"]
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        text = herald.metrics_text()
        if 'queue_oldest_age_seconds{queue="notifications.high"}' in text:
            break
        time.sleep(0.5)
    assert 'queue_depth{queue="notifications.high"}' in text
    assert 'queue_oldest_age_seconds{queue="notifications.dlq.email"}' in text
