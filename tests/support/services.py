"""Where the test suite finds PostgreSQL, RabbitMQ and Redis.

With DATABASE_URL / AMQP_URL / REDIS_URL set the suite uses those servers. Without them it uses the
embedded PostgreSQL and skips the RabbitMQ / Redis adapter tests, except under CI=true, where a
missing service fails the test instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(service: str, why: str) -> None:
    message = f"{service} is not available: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a service the suite needs must be running)")
    pytest.skip(message)


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False
