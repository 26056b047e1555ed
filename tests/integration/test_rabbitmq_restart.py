"""RabbitMQ restarted under load (``rabbitmqctl stop_app`` / ``start_app``) loses nothing and sends nothing
twice: the relay keeps its outbox rows while the broker is down, the senders' unacked envelopes come back
redelivered and the claim skips what was already sent. Counted at the provider, per message.

It runs on a RabbitMQ node of its own (its own node name, ports, data and cookie in a temporary
directory), started here and stopped by pid at the end: the machine's shared node is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.auth import Principal
from engine.broker.rabbitmq import RabbitMQBroker
from engine.relay import Relay, RelayOptions
from engine.sender_loop import SenderLoop
from tests.integration.lifecycle_support import Harness, clear_leftovers, uuid_of
from tests.support.services import missing

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nothing_left_to_send")]

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class PrivateRabbit:
    node: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [str(self._bin("rabbitmqctl")), "-n", self.node, *args],
            env={**os.environ, "HOME": str(self.home)},
            check=True,
            capture_output=True,
            timeout=60,
        )

    @staticmethod
    def _bin(name: str) -> Path:
        return RABBIT_BIN / name if (RABBIT_BIN / name).exists() else Path(shutil.which(name) or name)

    def wait_until(self, up: bool, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while _answers(self.port) != up:
            if time.monotonic() > deadline:
                raise AssertionError(f"the private RabbitMQ node did not {'start' if up else 'stop'} listening")
            time.sleep(0.2)


@pytest.fixture
def private_rabbit() -> Iterator[PrivateRabbit]:
    server = PrivateRabbit._bin("rabbitmq-server")
    if not server.exists():
        missing("RabbitMQ", "rabbitmq-server is not installed (the restart test starts a node of its own)")
    home = Path(tempfile.mkdtemp(prefix="herald-rabbit-"))
    (home / "enabled_plugins").write_text("[].\n")
    node = f"herald-test-{uuid.uuid4().hex[:8]}@localhost"
    port, dist = _free_port(), _free_port()
    env = {
        **os.environ,
        "HOME": str(home),  # its own erlang cookie, shared by rabbitmqctl through the same HOME
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(home / "none"),
        "RABBITMQ_PID_FILE": str(home / "pid"),
    }
    process = subprocess.Popen(
        [str(server)], env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    rabbit = PrivateRabbit(node, port, home, process)
    try:
        rabbit.wait_until(up=True, timeout_s=90)
        yield rabbit
    finally:
        pids = {process.pid}
        pid_file = home / "pid"
        if pid_file.exists() and pid_file.read_text().strip().isdigit():
            pids.add(int(pid_file.read_text().strip()))  # the beam process the script started
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(10)
        shutil.rmtree(home, ignore_errors=True)


async def test_a_broker_restart_under_load_loses_nothing_and_sends_nothing_twice(
    h: Harness, principal: Principal, private_rabbit: PrivateRabbit, database_url: str
) -> None:
    await h.broker.close()  # the harness' Postgres queue: this test's goes through the private node
    await clear_leftovers(h.repo)  # other tests' pending messages would share this relay and sender
    relay_broker = RabbitMQBroker(private_rabbit.url, prefetch=20, reconnect_interval_s=0.5)
    sender_broker = RabbitMQBroker(private_rabbit.url, prefetch=20, reconnect_interval_s=0.5)
    await relay_broker.connect()
    await sender_broker.connect()
    relay = Relay(
        h.repo, relay_broker, RelayOptions(batch=50, envelope_max_ids=5, broker_retry_s=0.2), listen_dsn=database_url
    )
    loop = SenderLoop(sender_broker, h.dispatcher, max_envelopes=4, wait_s=0.2)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(loop.run())]
    body = {"channel": "email", "template_id": "security_alert:v1", "variables": {"device": "Firefox"}}

    async def submit(n: int, tag: str) -> list[str]:
        return [await h.submit(principal, {**body, "to": {"email": f"{tag}{i}@example.com"}}) for i in range(n)]

    async def sent_at_least(n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(h.driver.sent) < n:
            assert time.monotonic() < deadline, f"{len(h.driver.sent)} of {n} sent"
            await asyncio.sleep(0.05)

    try:
        ids = await submit(300, "before")
        await sent_at_least(60, 30)
        await asyncio.to_thread(private_rabbit.ctl, "stop_app")  # mid-stream: batches in hand, envelopes queued
        await asyncio.to_thread(private_rabbit.wait_until, False)
        ids += await submit(100, "during")  # accepted while the broker is down: they wait in the outbox
        await asyncio.sleep(1.0)
        await asyncio.to_thread(private_rabbit.ctl, "start_app")
        await sent_at_least(len(ids), 90)
        await asyncio.sleep(1.0)  # anything redelivered late has had its chance to be sent twice
    finally:
        stop.set()
        await loop.stop(10)
        await asyncio.gather(*tasks, return_exceptions=True)
        await relay_broker.close()
        await sender_broker.close()
    mine = set(ids)  # a retry another test left due may still reach this relay: it is not counted here
    times = Counter(m.message_id for m in h.driver.sent if m.message_id in mine)
    assert set(times) == mine, "lost messages"
    assert max(times.values()) == 1, f"sent twice: {[m for m, n in times.items() if n > 1][:5]}"
    statuses = await h.repo.pool.fetch(
        "SELECT status, count(*) AS n FROM messages WHERE id = ANY($1::uuid[]) GROUP BY status",
        [uuid_of(i) for i in ids],
    )
    assert {r["status"]: r["n"] for r in statuses} == {"sent": len(ids)}
