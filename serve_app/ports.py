"""Keeping HERALD_HTTP_PORT for Herald while a local Ray starts around it.

A local Ray binds many ports: random ones (its gRPC servers, workers, agents, metrics) that the kernel
picks from the ephemeral range, and Serve's direct-ingress ranges when that mode is on. A port picked as
free before Ray starts can be taken by one of them before Serve's proxy binds it. So ``herald up``:

- checks the port before anything starts, and fails at once naming it when something else has it;
- keeps it bound from then until Serve's proxy listens on it. The socket is bound but never listening,
  with ``SO_REUSEPORT`` as the proxy's own socket has, so the proxy binds beside it while the kernel never
  hands the port to a bind to port 0 nor to an outgoing connection;
- moves Serve's direct-ingress port ranges off the port when it falls inside them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from engine.errors import ConfigurationError

log = logging.getLogger("herald")

#: Serve's direct-ingress port ranges: (min variable, max variable, Serve's defaults).
DIRECT_INGRESS_RANGES: tuple[tuple[str, str, int, int], ...] = (
    ("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", 30000, 31000),
    ("RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT", 40000, 41000),
)


def _socket_for(host: str, port: int) -> tuple[socket.socket, tuple[str, int]]:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a previous run's TIME_WAIT is no conflict
    return sock, (str(address[0]), int(address[1]))


@dataclass
class PortHold:
    """HERALD_HTTP_PORT kept bound (not listening) until Serve's proxy has it; see the module docstring."""

    host: str
    port: int
    sock: socket.socket | None = None

    @classmethod
    def take(cls, host: str, port: int) -> PortHold:
        """Raises:
        ConfigurationError: something on this machine already has ``host:port``; the message names it.
        """
        try:
            probe, address = _socket_for(host, port)
        except OSError as err:
            raise ConfigurationError(f"HERALD_HTTP_HOST={host!r}: {err}") from None
        try:
            probe.bind(address)  # no SO_REUSEPORT: fails beside any socket on the port, another proxy's too
        except OSError as err:
            raise ConfigurationError(
                f"HERALD_HTTP_PORT={port}: cannot listen on {host}:{port} ({err.strerror}); another process "
                f"has it{_holder(port)}: stop it, or set HERALD_HTTP_PORT to a free port"
            ) from None
        finally:
            probe.close()
        sock, address = _socket_for(host, port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        return cls(host, port, sock)

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def ray_port_environment(port: int, environ: Mapping[str, str]) -> dict[str, str]:
    """Variables that move Serve's direct-ingress port ranges off ``port`` (empty when it is outside them)."""
    moved: dict[str, str] = {}
    for min_var, max_var, default_min, default_max in DIRECT_INGRESS_RANGES:
        low, high = int(environ.get(min_var, default_min)), int(environ.get(max_var, default_max))
        if not low <= port <= high:
            continue
        width = high - low
        low, high = (port + 1, port + 1 + width) if port + 1 + width <= 65535 else (port - 1 - width, port - 1)
        moved.update({min_var: str(low), max_var: str(high)})
        log.info("%s..%s moved to %d-%d, off HERALD_HTTP_PORT=%d", min_var, max_var, low, high, port)
    return moved


def _holder(port: int) -> str:
    """`` (name, pid N)`` of what listens on ``port``, when this user may see it."""
    import psutil

    try:
        for c in psutil.net_connections("tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
                return f" ({psutil.Process(c.pid).name()}, pid {c.pid})"
    except psutil.Error:
        pass
    return ""
