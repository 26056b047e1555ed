"""Starting and stopping a whole Herald: database, migrations, Ray, actors and the Serve app.

Used by ``herald up`` / ``herald demo`` and by the integration tests (one stack per test session).

A stop is bounded: senders finish the batch in hand, the relay stops and Serve drains in-flight requests,
all at once and within :data:`DRAIN_BUDGET_S`; then Ray, and the embedded PostgreSQL when this stack
started it, are shut down. Whatever did not finish in time is safe to cut: accepted messages are in the
outbox, and a claimed message's lease expires and it is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine.settings import Settings
from engine.storage.dsn import redact_dsn
from engine.storage.migrate import migrate_url
from serve_app.ingress import default_replicas, serve_environment
from serve_app.ports import PortHold, ray_port_environment
from serve_app.runfile import RunFile, descendants, stop_leftovers

log = logging.getLogger("herald")

APP_NAME = "herald"
#: Senders, relay and Serve stop gracefully within this; what is left is then cut.
DRAIN_BUDGET_S = 7.0
#: A sender's grace for the batch in hand (inside the drain budget, leaving it time to close).
SENDER_GRACE_S = 4.0
#: Serve replicas: how long in-flight requests may finish once a replica is told to stop.
REPLICA_SHUTDOWN_S = 3.0


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from engine.storage.embedded import embedded_database_url

    return embedded_database_url(settings.data_dir)


def ray_process_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Ray's settings for Herald's processes (values already in ``environ`` win)."""
    environ = os.environ if environ is None else environ
    wanted = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "1",
        # Ray starts its workers at niceness 15, as if they were background work: here they are the
        # product (ingress replicas, senders, relay), and beside other programs they would starve.
        "RAY_worker_niceness": "0",
    }
    return {name: environ.get(name, value) for name, value in wanted.items()}


def _ray_environment(settings: Settings) -> None:
    """Variables Ray and Serve read at start-up (before ``ray.init``)."""
    os.environ.update(ray_process_environment())
    # The proxy's socket must share the port with PortHold's (see serve_app.ports), and drain quickly.
    os.environ["SERVE_SOCKET_REUSE_PORT_ENABLED"] = "1"
    os.environ.setdefault("RAY_SERVE_PROXY_GRACEFUL_SHUTDOWN_TIMEOUT_S", "2")
    os.environ.update(serve_environment(settings.ingress, os.environ))
    os.environ.update(ray_port_environment(settings.http_port, os.environ))


def _start_serve_controller(http_options: dict[str, Any]) -> list[Any]:
    """Serve's controller, started (unless it runs) without waiting for its proxies: the refs that tell
    when they are up. ``serve.start`` does the same and then waits."""
    from ray.serve._private import api as serve_api
    from ray.serve._private.client import ServeControllerClient
    from ray.serve.context import _get_global_client, _set_global_client

    if _get_global_client(raise_if_no_controller_running=False) is not None:
        return []  # already running
    controller, proxies = serve_api._create_controller_and_proxy_refs(
        http_options, None, None, None, serve_api._coerce_controller_options(None)
    )
    _set_global_client(ServeControllerClient(controller))
    return list(proxies)


class _OwnControllerNotice(logging.Filter):
    """Drops Serve's "Connecting to existing Serve app ... New http_options/controller_options will not
    be applied", which ``serve.run_many`` logs on finding a controller: here the controller is the one
    :func:`_start_serve_controller` just started with Herald's options, so they were applied."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Connecting to existing Serve app")


async def _shutdown_serve() -> None:
    """``serve.shutdown_async`` without its noise: that one waits on a ``graceful_shutdown`` call that
    never answers (the controller exits under it, by design), and Ray prints the call's failure on the
    driver's console as an error. Here the controller is told to shut down without waiting, and the
    controller's name is watched until it is gone."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve.context import _get_global_client, _set_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return
    await client.shutdown_cached_handles_async()
    with contextlib.suppress(ray.exceptions.RayActorError):  # already gone
        await client._controller.graceful_shutdown.remote(wait=False)
    while True:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            break  # gone: its applications and proxies went before it
        await asyncio.sleep(0.05)
    client._shutdown = True
    _set_global_client(None)


async def _check_providers(settings: Settings, database_url: str) -> None:
    """Build (and close) every configured driver, so a missing setting stops start-up naming it."""
    from actors.wiring import DriverWiring
    from engine.runtime import provider_chains

    wiring = DriverWiring(database_url)
    try:
        for chain in provider_chains(settings, os.environ, wiring.factory).values():
            for driver in chain:
                await driver.aclose()
    finally:
        await wiring.aclose()


@dataclass
class Stack:
    settings: Settings
    database_url: str = ""
    senders: list[Any] = field(default_factory=list)
    relay: Any = None
    feedback: Any = None
    ingress: Any = None  #: the ingress queue's consumer (RabbitMQ only)
    #: metrics aggregator, routing table, provider health board (every circuit breaker), governor shard 0
    control: Any = None
    governors: list[Any] = field(default_factory=list)  #: the rate limits' token buckets, shards 1..
    owns_ray: bool = False
    run_file: RunFile | None = None
    port: PortHold | None = None
    embedded: bool = False
    _config: Any = None  #: the RuntimeConfig the ingress was started with

    def prepare(self) -> None:
        """The checks that fail fast, before anything starts: no other Herald runs from the data directory
        (cleaning up after one that was killed), and the HTTP port is free (then held, see serve_app.ports).

        Raises:
            ConfigurationError: the data directory is in use, or the port is taken; the message names it.
        """
        if self.run_file is None:
            run_file = RunFile.in_dir(self.settings.data_dir)
            run_file.claim()
            self.run_file = run_file
        if self.port is None and not self.settings.ray_address:
            self.port = PortHold.take(self.settings.http_host, self.settings.http_port)

    def start(self, *, timeout_s: float = 120.0) -> None:
        from engine.routing import load_table
        from engine.runtime import RuntimeConfig

        self.prepare()
        s = self.settings
        self.embedded = not s.database_url
        # The database (initdb on a first start) and Ray start at once: neither needs the other. Ray's
        # package is imported whole first, so the two threads never import its modules at once.
        import ray  # noqa: F401

        with ThreadPoolExecutor(1, thread_name_prefix="herald-db") as pool:
            database = pool.submit(self._prepare_database)
            try:
                self._start_ray()
            finally:
                applied = database.result()  # a failed Ray start still waits for the database, to stop it
        table = load_table(s.routing_table_path)
        config = RuntimeConfig.capture(s, self.database_url)
        for part, backend in config.backends().items():
            log.info("%-18s %s", part + ":", backend)
        log.info("database url:      %s; migrations applied now: %d", redact_dsn(self.database_url), len(applied))
        if self.run_file is not None:  # Ray's own processes, should this one be killed while starting
            self.run_file.record_children()
        started = self._start_actors(config, table)
        self._wait_actors(started, timeout_s)
        self._wait_healthy(timeout_s)
        if self.port is not None:  # Serve's proxy listens on it now
            self.port.release()
        if self.run_file is not None:
            self.run_file.record_children(ports=[s.http_port])
        log.info("herald is up at %s", s.base_url)

    def _prepare_database(self) -> list[str]:
        """Start (or join) the database, check the providers' settings against it and migrate it; the
        migrations applied now."""
        self.database_url = resolve_database_url(self.settings)
        # Fail now, naming the variable (or the routing table's key), rather than at the first send.
        asyncio.run(_check_providers(self.settings, self.database_url))
        applied = asyncio.run(migrate_url(self.database_url))
        # What the actors and the ingress are made of, imported here while Ray starts rather than after,
        # when their processes wait for this one to ask for them.
        from actors import control, feedback, governor, ingress, relay, sender  # noqa: F401
        from serve_app import api  # noqa: F401

        return applied

    def _start_ray(self) -> None:
        import ray

        from actors import NAMESPACE

        s = self.settings
        _ray_environment(s)
        if ray.is_initialized():
            return
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        self.owns_ray = True
        ray.init(
            address=s.ray_address or "local",
            namespace=NAMESPACE,
            include_dashboard=False,
            object_store_memory=s.object_store_mb * 1024 * 1024 if not s.ray_address else None,
            log_to_driver=True,
            configure_logging=False,
        )
        if callable(previous):  # ray.init replaced the handler the caller installed with its own exit
            signal.signal(signal.SIGTERM, previous)

    def _start_actors(self, config: Any, table: Any) -> list[Any]:
        """Create every actor and deploy the ingress; the refs to wait for (:meth:`_wait_actors`): each
        actor's health and Serve's proxies. The named control-plane actors come first: a sender finds them
        by name as it starts, and its calls wait until they are up."""

        from actors import (
            CONTROL_ACTOR,
            FEEDBACK_ACTOR,
            HIGH_SENDER_ACTOR_PREFIX,
            INGRESS_ACTOR,
            NAMESPACE,
            RELAY_ACTOR,
            SENDER_ACTOR_PREFIX,
        )
        from actors.control import ControlActor
        from actors.feedback import FeedbackActor
        from actors.governor import start_governors
        from actors.ingress import IngressActor
        from actors.relay import RelayActor
        from actors.sender import SenderActor

        s = self.settings
        self.control = ControlActor.options(name=CONTROL_ACTOR, namespace=NAMESPACE).remote(config)
        self.governors = start_governors(s.governor_shards)
        log.info("routing table:     %s (%s)", table.label, s.routing_table_path)
        # Serve's chain (controller, then proxies and replicas) is the longest part of a start: its
        # processes are asked for before the rest, as Ray starts only so many workers at once.
        proxies = self._start_serve(config)
        self.relay = RelayActor.options(name=RELAY_ACTOR, namespace=NAMESPACE).remote(config)
        self.senders = [
            SenderActor.options(name=f"{SENDER_ACTOR_PREFIX}{i}", namespace=NAMESPACE).remote(config, i)
            for i in range(self.settings.senders)
        ] + [
            SenderActor.options(name=f"{HIGH_SENDER_ACTOR_PREFIX}{i}", namespace=NAMESPACE).remote(
                config, i, high_only=True
            )
            for i in range(self.settings.high_senders)
        ]
        self.feedback = FeedbackActor.options(name=FEEDBACK_ACTOR, namespace=NAMESPACE).remote(config)
        workers = [self.control, *self.governors, self.relay, self.feedback, *self.senders]
        if s.amqp_url:
            self.ingress = IngressActor.options(name=INGRESS_ACTOR, namespace=NAMESPACE).remote(config)
            workers.append(self.ingress)
        return [a.health.remote() for a in workers] + proxies

    def _wait_actors(self, started: list[Any], timeout_s: float) -> None:
        import ray

        ray.get(started, timeout=timeout_s)

    def scale_ingress(self, replicas: int, *, timeout_s: float = 120.0) -> None:
        """Run the ingress on ``replicas`` Serve replicas (the running ones stay), and wait until all serve."""
        from ray import serve

        self._start_serve(self._config, replicas=replicas)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            app = serve.status().applications.get(APP_NAME)
            if app is not None and app.status == "RUNNING":
                counts = [d.replica_states.get("RUNNING", 0) for d in app.deployments.values()]
                if counts and all(c == replicas for c in counts):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the ingress did not reach {replicas} replicas in {timeout_s:.0f}s")

    def _start_serve(self, config: Any, replicas: int | None = None) -> list[Any]:
        """Deploy the ingress; what to wait on for Serve's proxies. Starting Serve, its controller starts
        the proxies, and the replicas are asked for as soon as the controller is up, not once the proxies
        are (``serve.start`` waits for them first): the proxies and replicas start at once."""
        from ray import serve

        from serve_app.api import HeraldApi

        s = self.settings
        self._config = config
        proxies = _start_serve_controller({"host": s.http_host, "port": s.http_port})
        quiet = s.log_level.upper() not in ("DEBUG", "INFO")
        api = HeraldApi.options(
            num_replicas=replicas or s.ingress_replicas or default_replicas(),
            logging_config={"log_level": s.log_level.upper(), "enable_access_log": not quiet},
            graceful_shutdown_wait_loop_s=0.5,
            graceful_shutdown_timeout_s=REPLICA_SHUTDOWN_S,
        )
        target = serve.RunTarget(target=api.bind(config), name=APP_NAME, route_prefix="/")
        serve_log, notice = logging.getLogger("ray.serve"), _OwnControllerNotice()
        serve_log.addFilter(notice)
        try:
            serve.run_many([target], wait_for_applications_running=replicas is not None)
        finally:
            serve_log.removeFilter(notice)
        return proxies

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
        """Drain (bounded), then stop Ray and, at the same time, the embedded PostgreSQL this stack started
        (nothing uses it once drained). Safe to call after a partial start, and more than once."""
        phases: dict[str, float] = {}
        began = time.monotonic()
        try:
            self._drain_and_kill(phases)
        finally:
            database = threading.Thread(target=self._stop_database, args=(phases,), name="herald-stop-database")
            database.start()
            try:
                self._shutdown_ray(phases)
            finally:
                database.join()
                if self.port is not None:
                    self.port.release()
                if self.run_file is not None:
                    self.run_file.release()
                    self.run_file = None
        spent = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in phases.items())
        log.info("stopped in %.1fs (%s)", time.monotonic() - began, spent or "nothing was running")

    def _drain_and_kill(self, phases: dict[str, float]) -> None:
        if "ray" not in sys.modules:
            return  # never started
        import ray

        if not ray.is_initialized():
            return
        mark = time.monotonic()
        try:
            asyncio.run(self._drain(mark + DRAIN_BUDGET_S))
        finally:
            actors = [
                *self.senders,
                self.relay,
                self.feedback,
                self.ingress,
                self.control,
                *self.governors,
            ]
            for actor in actors:
                if actor is not None:
                    with contextlib.suppress(ray.exceptions.RayError, ValueError):  # already gone
                        ray.kill(actor, no_restart=True)
            self.senders, self.relay, self.feedback, self.ingress = [], None, None, None
            self.control, self.governors = None, []
            phases["drain"] = time.monotonic() - mark

    def _shutdown_ray(self, phases: dict[str, float]) -> None:
        if not self.owns_ray:
            return
        import ray

        mark = time.monotonic()
        # what Ray's processes started after they were recorded (a reloaded HAProxy), while they still run
        recorded = self.run_file.children() if self.run_file is not None else []
        late = descendants(recorded)
        ray.shutdown()
        self.owns_ray = False
        if self.run_file is not None:  # anything of Ray's that outlived its shutdown
            left = stop_leftovers(recorded + late, grace_s=2.0)
            if left:
                log.warning("stopped what Ray left running after its shutdown: %s", ", ".join(left))
        phases["ray"] = time.monotonic() - mark

    def _stop_database(self, phases: dict[str, float]) -> None:
        if not self.embedded:
            return
        from engine.storage.embedded import release_embedded

        mark = time.monotonic()
        if not release_embedded(self.settings.data_dir):
            log.warning("the embedded PostgreSQL in %s is still running", self.settings.data_dir / "pg")
        self.embedded = False
        phases["database"] = time.monotonic() - mark

    async def _drain(self, deadline: float) -> None:
        """Senders finish the batch in hand, the relay stops, Serve drains: concurrently, until ``deadline``.

        The control actor holds no work: it stays up through the drain (a stopping sender hands the health
        board its last tallies and the aggregator its last counts); then it persists the monthly volumes,
        and is killed with the others."""
        steps: dict[str, Awaitable[Any]] = {
            f"sender {i}": a.stop.remote(grace_s=SENDER_GRACE_S) for i, a in enumerate(self.senders)
        }
        if self.relay is not None:
            steps["relay"] = self.relay.stop.remote()
        if self.feedback is not None:
            steps["feedback"] = self.feedback.stop.remote()
        if self.ingress is not None:
            steps["ingress"] = self.ingress.stop.remote()
        steps["serve"] = _shutdown_serve()
        tasks = {name: asyncio.ensure_future(step) for name, step in steps.items()}
        await asyncio.wait(tasks.values(), timeout=max(0.0, deadline - time.monotonic()))
        for name, task in tasks.items():
            if not task.done():
                task.cancel()
                log.warning("%s did not stop within %.0fs; cut (leases of its work expire)", name, DRAIN_BUDGET_S)
            elif not task.cancelled() and task.exception() is not None:
                log.warning("%s did not stop cleanly: %s", name, task.exception())
        if self.control is not None:
            try:
                await asyncio.wait_for(self.control.stop.remote(), timeout=max(1.0, deadline - time.monotonic()))
            except Exception as err:  # stopping goes on whatever happened
                log.warning("the control actor did not stop cleanly: %s", err)
