"""HERALD_HTTP_PORT held for Serve's proxy while Ray starts (serve_app.ports)."""

from __future__ import annotations

import os
import socket

import pytest

from engine.errors import ConfigurationError
from serve_app.ports import PortHold, ray_port_environment
from tests.support.herald_process import free_port


def proxy_socket() -> socket.socket:
    """A socket set up as Serve's proxy sets up its own (SO_REUSEADDR and SO_REUSEPORT)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def test_the_proxy_binds_beside_the_hold_and_nothing_else_does() -> None:
    port = free_port()
    hold = PortHold.take("127.0.0.1", port)
    try:
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        with proxy_socket() as proxy:
            proxy.bind(("127.0.0.1", port))
            proxy.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=5):  # reaches the proxy, not the hold
                accepted, _ = proxy.accept()
                accepted.close()
            hold.release()
        assert hold.sock is None
    finally:
        hold.release()


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_taken_port_is_refused_naming_it(reuse_port: bool) -> None:
    port = free_port()
    with proxy_socket() if reuse_port else socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ConfigurationError, match=rf"HERALD_HTTP_PORT={port}: cannot listen on 127\.0\.0\.1:{port}"):
            PortHold.take("127.0.0.1", port)
        with pytest.raises(ConfigurationError, match=rf"another process has it \(\S+, pid {os.getpid()}\)"):
            PortHold.take("127.0.0.1", port)  # and names it


def test_direct_ingress_ranges_move_off_the_port() -> None:
    assert ray_port_environment(8000, {}) == {}
    assert ray_port_environment(30500, {}) == {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "30501",
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31501",
    }
    moved = ray_port_environment(40000, {})
    assert (moved["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"], moved["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"]) == (
        "40001",
        "41001",
    )
    near_top = {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "65000", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "65500"}
    assert ray_port_environment(65100, near_top) == {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "64599",
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "65099",
    }
