"""Where Herald may deliver events: callback URLs checked at admission and again at connect time.

A tenant names the URL, Herald's workers make the request, so a URL pointing inside our network (the
cloud metadata service at 169.254.169.254, a database on 10.0.0.5, localhost) would let a tenant reach
what only Herald can. Two checks close that:

- :func:`check_callback_url` at admission: ``https`` only, no credentials in the URL, and a host that is
  neither a private, loopback, link-local, CGNAT, multicast or reserved address (IPv4-mapped and other
  IPv6 forms that embed one included, numeric forms such as ``0xA9FEA9FE`` included, since the URL is
  normalized the way browsers do first) nor a name that only resolves inside a network (``localhost``,
  ``*.internal``, ``metadata.google.internal``, single-label names).
- :class:`GuardedNetworkBackend` at connect time: the host is resolved, every address it resolves to is
  checked, and the connection goes to a checked address. Checking when connecting, on the very address
  connected to, is what defeats DNS rebinding (a name that was public at admission and points at
  127.0.0.1 by delivery time).

``allow_private`` (``HERALD_WEBHOOKS_ALLOW_PRIVATE``, for development and tests) lifts both: plain
``http`` and private targets are accepted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx
from pydantic_core import Url, ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses`` as text; the default asks the system (getaddrinfo).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

#: Names that never resolve to a public address.
BLOCKED_NAMES: frozenset[str] = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"}
)
#: Name suffixes reserved for private use (RFC 6761, RFC 6762, RFC 8375, ICANN's ``.internal``).
BLOCKED_SUFFIXES: tuple[str, ...] = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan")

#: Refused even where Python's ``is_global`` would say otherwise, so the rule does not depend on the
#: interpreter's release: CGNAT, IETF protocol assignments, benchmarking, AWS's IPv6 metadata
#: (``fd00:ec2::254``, within the ULA block), NAT64's local-use prefix, discard-only, documentation.
ALWAYS_BLOCKED: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "fc00::/7",
        "fe80::/10",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UnsafeCallbackUrl(ValueError):
    """A callback URL (or the address its host resolves to) that Herald will not call."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_forbidden_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is anything but a public unicast address (or embeds one that is not)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None and is_forbidden_address(inner):
            return True
        if ip.ipv4_mapped is not None:
            return False  # a public IPv4 written as ::ffff:a.b.c.d is that address
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or any(ip in net for net in ALWAYS_BLOCKED if net.version == ip.version)
    )


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _check_name(host: str) -> None:
    name = host.rstrip(".").lower()
    if name in BLOCKED_NAMES or name.endswith(BLOCKED_SUFFIXES):
        raise UnsafeCallbackUrl(f"{name} is a private host name")
    if "." not in name:
        raise UnsafeCallbackUrl(f"{name} is not a fully qualified host name")


def check_callback_url(url: str, *, allow_private: bool = False) -> str:
    """Admission check of a callback URL; the URL normalized as browsers do.

    Raises:
        UnsafeCallbackUrl: why it is refused (a sentence fit for a 422).
    """
    try:
        parsed = Url(url)
    except ValidationError:
        raise UnsafeCallbackUrl("not a valid URL") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in allowed:
        raise UnsafeCallbackUrl("must be an https URL")
    if not parsed.host:
        raise UnsafeCallbackUrl("must name a host")
    if allow_private:
        return str(parsed)
    if parsed.username or parsed.password:
        raise UnsafeCallbackUrl("must not carry credentials")
    literal = _literal(parsed.host)
    if literal is None:
        _check_name(parsed.host)
    elif is_forbidden_address(literal):
        raise UnsafeCallbackUrl(f"{literal} is a private, loopback, link-local or reserved address")
    return str(parsed)


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The addresses the system resolves ``host`` to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _parse_addresses(host: str, found: Iterable[str]) -> list[IPAddress]:
    addresses: list[IPAddress] = []
    for text in found:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise UnsafeCallbackUrl(f"{host} resolved to something that is not an address") from None
        if ip not in addresses:
            addresses.append(ip)
    return addresses


async def resolve_safe(
    host: str, port: int, *, resolver: Resolver = system_resolver, allow_private: bool = False
) -> list[IPAddress]:
    """Resolve ``host`` and return its addresses, refusing the host if any of them is not public (an
    attacker's name may mix a public address with 127.0.0.1 and hope we pick the second).

    Raises:
        UnsafeCallbackUrl: it resolves to nothing, or to a forbidden address.
    """
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        if not allow_private:
            _check_name(host)
        try:
            addresses = _parse_addresses(host, await resolver(host, port))
        except OSError as err:
            raise UnsafeCallbackUrl(f"{host} does not resolve ({err.strerror or err})") from None
    if not addresses:
        raise UnsafeCallbackUrl(f"{host} does not resolve")
    if not allow_private:
        bad = [ip for ip in addresses if is_forbidden_address(ip)]
        if bad:
            raise UnsafeCallbackUrl(f"{host} resolves to {bad[0]}, a private or reserved address")
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to checked addresses (see :func:`resolve_safe`).

    TLS still verifies the certificate against the URL's host name: httpcore starts TLS on the stream
    with the origin's name, whatever address the stream was opened to.
    """

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        allow_private: bool = False,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.resolver = resolver
        self.allow_private = allow_private
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve_safe(host, port, resolver=self.resolver, allow_private=self.allow_private)
        except UnsafeCallbackUrl as err:
            raise httpcore.ConnectError(str(err)) from err
        failure: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                failure = err
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("callbacks never go to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go through :class:`GuardedNetworkBackend`.

    Use it with ``httpx.AsyncClient(transport=..., trust_env=False)`` so no proxy from the environment
    sits between the check and the connection.
    """

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        allow_private: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(limits=limits, trust_env=False)
        # httpx takes no network backend, so its connection pool is replaced by one that has ours; the
        # tests make real requests through this transport, so a change in httpx shows there.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(resolver=resolver, allow_private=allow_private),
        )
