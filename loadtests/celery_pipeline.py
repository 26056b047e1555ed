"""The Celery baseline of P3 (``loadtests.e2e_bench``): one task per message, each doing what one of
Herald's sender passes does for one message (claim, render, send to the ``sink`` provider, record status,
attempt and event) with Herald's own dispatcher, on the same RabbitMQ and PostgreSQL.

Run by the benchmark as ``celery -A loadtests.celery_pipeline worker`` with ``HERALD_BENCH_DATABASE_URL``,
``HERALD_BENCH_AMQP_URL`` and ``HERALD_BENCH_QUEUE`` set (the ``bench`` extra installs Celery).
"""

from __future__ import annotations

import asyncio
import os
import uuid

from celery import Celery

from drivers.sink import EmailSink
from engine.channels import Channel
from engine.dispatch import Dispatcher, DispatchOptions
from engine.metrics import MetricsBuffer
from engine.retries import RetryPolicy
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from loadtests.bench import TEMPLATES

QUEUE = os.environ.get("HERALD_BENCH_QUEUE", "herald-bench-celery")

app = Celery("herald_bench", broker=os.environ.get("HERALD_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,  # as Herald's senders: a message is acked once recorded
    worker_prefetch_multiplier=16,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_state: dict[str, object] = {}


def _dispatcher() -> tuple[asyncio.AbstractEventLoop, Dispatcher]:
    """One event loop, pool and dispatcher per worker process, made at its first task."""
    if "dispatcher" not in _state:
        loop = asyncio.new_event_loop()
        # the pool Herald's senders get (generic plans), so the baseline's claims are planned as theirs are
        dsn = os.environ["HERALD_BENCH_DATABASE_URL"]
        pool = loop.run_until_complete(create_pool(dsn, min_size=1, max_size=2, generic_plans=True))
        _state["loop"] = loop
        _state["dispatcher"] = Dispatcher(
            Repository(pool),
            TemplateCatalog(TEMPLATES),
            {Channel.EMAIL: [EmailSink()]},
            policy=RetryPolicy(),
            metrics=MetricsBuffer(),
            options=DispatchOptions(),
        )
    return _state["loop"], _state["dispatcher"]  # type: ignore[return-value]


@app.task(name="herald_bench.send")
def send(message_id: str) -> None:
    loop, dispatcher = _dispatcher()
    loop.run_until_complete(dispatcher.process([uuid.UUID(hex=message_id)]))
