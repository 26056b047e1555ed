"""Starting and stopping a whole Herald: database, migrations, Ray, actors and the Serve app.

Used by ``herald up`` / ``herald demo`` and by the integration tests (one stack per test session).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from engine.settings import Settings
from engine.storage.dsn import redact_dsn
from engine.storage.migrate import migrate_url

log = logging.getLogger("herald")

APP_NAME = "herald"


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from engine.storage.embedded import embedded_database_url

    return embedded_database_url(settings.data_dir)


def _ray_environment(settings: Settings) -> None:
    """Variables Ray and Serve read at start-up (before ``ray.init``)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if settings.direct_ingress:
        os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")


async def _close_all(chains: dict[Any, list[Any]]) -> None:
    for chain in chains.values():
        for driver in chain:
            await driver.aclose()


@dataclass
class Stack:
    settings: Settings
    database_url: str = ""
    actors: list[Any] = field(default_factory=list)
    senders: list[Any] = field(default_factory=list)
    relay: Any = None
    metrics: Any = None
    health: Any = None
    routing: Any = None
    owns_ray: bool = False

    def start(self, *, timeout_s: float = 120.0) -> None:
        import ray
        from ray import serve

        from actors import HEALTH_ACTOR, METRICS_ACTOR, NAMESPACE, RELAY_ACTOR, ROUTING_ACTOR, SENDER_ACTOR_PREFIX
        from actors.health import HealthActor
        from actors.metrics import MetricsActor
        from actors.relay import RelayActor
        from actors.routing import RoutingTableActor
        from actors.sender import SenderActor
        from engine.routing import load_table
        from engine.runtime import RuntimeConfig, provider_chains
        from serve_app.api import HeraldApi

        s = self.settings
        self.database_url = resolve_database_url(s)
        # Fail now, naming the variable (or the routing table's key), rather than at the first send.
        asyncio.run(_close_all(provider_chains(s, os.environ, database_url=self.database_url)))
        table = load_table(s.routing_table_path)
        applied = asyncio.run(migrate_url(self.database_url))
        config = RuntimeConfig.capture(s, self.database_url)
        for part, backend in config.backends().items():
            log.info("%-18s %s", part + ":", backend)
        log.info("database url:      %s; migrations applied now: %d", redact_dsn(self.database_url), len(applied))

        _ray_environment(s)
        if not ray.is_initialized():
            ray.init(
                address=s.ray_address or "local",
                namespace=NAMESPACE,
                include_dashboard=False,
                object_store_memory=s.object_store_mb * 1024 * 1024 if not s.ray_address else None,
                log_to_driver=True,
                configure_logging=False,
            )
            self.owns_ray = True
        self.metrics = MetricsActor.options(name=METRICS_ACTOR, namespace=NAMESPACE, get_if_exists=True).remote()
        self.health = HealthActor.options(name=HEALTH_ACTOR, namespace=NAMESPACE).remote(table, s.log_level)
        self.routing = RoutingTableActor.options(name=ROUTING_ACTOR, namespace=NAMESPACE).remote(
            str(s.routing_table_path)
        )
        ray.get([self.health.health.remote(), self.routing.health.remote()], timeout=timeout_s)
        log.info("routing table:     %s (%s)", table.label, s.routing_table_path)
        self.relay = RelayActor.options(name=RELAY_ACTOR, namespace=NAMESPACE).remote(config)
        self.senders = [
            SenderActor.options(name=f"{SENDER_ACTOR_PREFIX}{i}", namespace=NAMESPACE).remote(config, i)
            for i in range(s.senders)
        ]
        ray.get([self.relay.health.remote(), *(a.health.remote() for a in self.senders)], timeout=timeout_s)
        serve.start(http_options={"host": s.http_host, "port": s.http_port})
        quiet = s.log_level.upper() not in ("DEBUG", "INFO")
        api = HeraldApi.options(logging_config={"log_level": s.log_level.upper(), "enable_access_log": not quiet})
        serve.run(api.bind(config), name=APP_NAME, route_prefix="/", blocking=False)
        self._wait_healthy(timeout_s)
        log.info("herald is up at %s", s.base_url)

    def _wait_healthy(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://{self.settings.http_host}:{self.settings.http_port}/admin/healthz", timeout=5)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as err:
                last = str(err)
            time.sleep(0.5)
        raise RuntimeError(f"herald did not become healthy in {timeout_s:.0f}s: {last}")

    def stop(self) -> None:
        """Finish in-flight batches, return unacked work to the broker, then stop Serve and Ray."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        try:
            ray.get([a.stop.remote() for a in self.senders], timeout=30)
            if self.relay is not None:
                ray.get(self.relay.stop.remote(), timeout=15)
        except (ray.exceptions.RayError, TimeoutError) as err:
            log.warning("graceful stop incomplete: %s", err)
        serve.shutdown()
        for actor in [*self.senders, self.relay, self.routing, self.health, self.metrics]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        if self.owns_ray:
            ray.shutdown()
