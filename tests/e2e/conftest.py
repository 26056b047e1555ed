"""One Herald (local Ray, actors, Serve app) for the whole test session, on the real services.

With AMQP_URL set, Herald reaches RabbitMQ through a TCP proxy the tests can cut, to play a broker
outage; without it Herald runs on the Postgres queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from drivers.fakes import AllFakes, run_fakes
from engine.routing import SHIPPED_TABLE
from engine.settings import Settings, load_settings
from tests.support.tcpproxy import TcpProxy

SECRET = "e2e-secret-0123456789-0123456789-abcdef"
#: Statuses of a message its provider accepted: emulators report deliveries back within a second.
ACCEPTED = frozenset({"sent", "delivered"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Herald:
    settings: Settings
    stack: Any
    proxy: TcpProxy | None
    console_file: Path
    fakes: AllFakes
    #: Between Herald's Twilio drivers and the Twilio emulator: ``refuse()`` plays a dead server.
    twilio_proxy: TcpProxy
    #: The stack's HERALD_ROUTING_TABLE (a copy of the shipped one): rewrite it, then ``reload_routing()``.
    routing_table: Path

    def reload_routing(self) -> dict[str, Any]:
        r = httpx.post(
            f"{self.base_url}/admin/routing/reload",
            headers={"Authorization": f"Bearer {self.platform_token()}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def use_providers(self, tenant: str, **channels: list[str]) -> None:
        """Pin a tenant's providers per channel (its config's allow-list), creating the tenant if new."""
        self.token(tenant)
        self.sql(
            "UPDATE tenants SET config = jsonb_set(config, '{providers}', $2::jsonb) WHERE slug = $1",
            tenant,
            json.dumps({channel: {"allow": names} for channel, names in channels.items()}),
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def token(self, tenant: str, *, admin: bool = False) -> str:
        from serve_app.cli import make_token

        return make_token(self.settings, tenant, admin=admin)

    def platform_token(self) -> str:
        from serve_app.cli import make_token

        return make_token(self.settings, None, platform=True)

    def metrics_text(self) -> str:
        """What Prometheus scrapes, with the platform operator's token as its bearer."""
        r = httpx.get(
            f"{self.base_url}/metrics", headers={"Authorization": f"Bearer {self.platform_token()}"}, timeout=10
        )
        assert r.status_code == 200, r.text
        return r.text

    def client(self, tenant: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(tenant)}"} if tenant else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def console_records(self) -> list[dict[str, Any]]:
        if not self.console_file.exists():
            return []
        return [json.loads(line) for line in self.console_file.read_text().splitlines() if line.strip()]

    def wait_status(
        self, client: httpx.Client, message_id: str, done: Callable[[str], bool], timeout_s: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = client.get(f"/api/notifications/{message_id}").json()
            if done(view.get("status", "")):
                return view
            time.sleep(0.1)
        raise AssertionError(f"{message_id} stuck at {view.get('status')}: {view}")

    def sql(self, query: str, *args: Any) -> Any:
        import asyncpg

        async def run() -> Any:
            conn = await asyncpg.connect(self.stack.database_url)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return asyncio.run(run())


def _via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture(scope="session")
def stack_database_url(pg_server_url: str) -> Iterator[str]:
    """The stack's own database: its relay must not take other tests' outbox rows (nor they its)."""
    from tests.conftest import fresh_database

    yield from fresh_database(pg_server_url)


@pytest.fixture(scope="session")
def herald(stack_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    from serve_app.stack import Stack

    database_url = stack_database_url

    data_dir = tmp_path_factory.mktemp("herald-data")
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": database_url,
        "HERALD_DATA_DIR": str(data_dir),
        "HERALD_HTTP_PORT": str(port),
        # Providers' callbacks (the emulators') reach the webhooks here; tests' receivers are local.
        "HERALD_PUBLIC_URL": public_url,
        "HERALD_WEBHOOKS_ALLOW_PRIVATE": "true",
        "HERALD_WEBHOOK_RETRY_BASE_SECONDS": "0.3",
        "HERALD_WEBHOOK_TIMEOUT_SECONDS": "5",
        "HERALD_JWT_SECRET": SECRET,
        "HERALD_QUEUE_PREFIX": f"test-{uuid.uuid4().hex[:8]}.",
        "HERALD_SEND_LEASE_SECONDS": "3",
        "HERALD_RELAY_POLL_SECONDS": "0.2",
        "HERALD_QUEUE_STATS_SECONDS": "1",  # the queues view and gauges a test waits for
        "HERALD_SENDERS": "2",
        # No health checks unless a test turns them on for one provider (the table's breaker.check_s):
        # tests count the requests their emulators saw.
        "HERALD_HEALTH_CHECK_SECONDS": "0",
        "HERALD_VOLUME_FLUSH_SECONDS": "0.5",
        "HERALD_INGRESS_REPLICAS": "2",  # caches, key snapshots and counters must agree across replicas
        "HERALD_GOVERNOR_SHARDS": "2",  # tenants spread over shards, as on a cluster
        "HERALD_LOG_LEVEL": "WARNING",
    }
    proxy = None
    amqp = os.environ.get("AMQP_URL")
    if amqp:
        target = urlsplit(amqp)
        proxy = TcpProxy()
        env["AMQP_URL"] = _via_proxy(amqp, proxy.start(target.hostname or "127.0.0.1", target.port or 5672))
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    # Every real driver runs against its emulator; console stays first for email and SMS so a
    # tenant without a provider choice gets the console JSONL, and tests pick a provider per tenant.
    # The emulators report deliveries to the stack's webhooks, signed with the keys in fakes.env.
    fakes = run_fakes(data_dir / "fakes", public_url=public_url)
    twilio = urlsplit(fakes.env["HERALD_TWILIO_BASE_URL"])
    twilio_proxy = TcpProxy()
    twilio_port = twilio_proxy.start(twilio.hostname or "127.0.0.1", twilio.port or 80)
    routing_table = data_dir / "routing_table.yaml"
    routing_table.write_text(SHIPPED_TABLE.read_text())
    saved = dict(os.environ)
    os.environ.update(fakes.env)  # the stack hands HERALD_*/AWS_* provider settings to its actors
    os.environ["HERALD_TWILIO_BASE_URL"] = f"http://127.0.0.1:{twilio_port}"
    env["HERALD_ROUTING_TABLE"] = str(routing_table)
    env.update(
        {
            "HERALD_EMAIL_PROVIDERS": "console,ses,sendgrid,smtp",
            "HERALD_SMS_PROVIDERS": "console,twilio,sns",
            "HERALD_PUSH_PROVIDERS": "fcm,apns",
            "HERALD_WHATSAPP_PROVIDERS": "meta,twilio",
        }
    )
    settings = load_settings(env)
    stack = Stack(settings)
    try:
        stack.start()
        yield Herald(settings, stack, proxy, data_dir / "console.jsonl", fakes, twilio_proxy, routing_table)
    finally:
        stack.stop()
        twilio_proxy.stop()
        fakes.stop()
        os.environ.clear()
        os.environ.update(saved)
        if proxy is not None:
            proxy.stop()
