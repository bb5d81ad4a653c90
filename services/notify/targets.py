"""Where webhooks may go: public https endpoints, and the hosts an operator allow-lists.

Two checks, one policy:

- **At subscription** (``TargetPolicy.check_url``, pure: no DNS, so the intake never waits on a
  resolver): ``https`` only, and a host written as an IP address (in any spelling the resolver
  would accept, ``0x7f.1`` included) or named ``localhost`` must not be loopback, private,
  link-local, a cloud metadata address, multicast, unspecified or reserved. Hosts on the
  allow-list (``MILESTONES_WEBHOOK_ALLOW_HOSTS``; ``milestones dev`` lists loopback there for
  local receivers) skip both checks.
- **At send time** (``PinnedBackend``): the host is resolved once, *every* address it resolves
  to is checked against the same ranges, and the connection goes to a checked address: there is
  no second lookup that a DNS-rebinding answer could change. TLS (SNI, certificate) and the
  ``Host`` header keep the hostname, since only the TCP connect is given the address.

Redirects are never followed (the sender's client says so), so a public endpoint cannot bounce
a webhook into a private network either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpcore
import httpx

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Cloud instance metadata endpoints: link-local or private anyway, named so the message is plain.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address inside an IPv6 one
LOOPBACK_NAMES = re.compile(r"^(localhost|localhost\.localdomain|ip6-localhost|.*\.localhost)$")
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)


class TargetRefused(Exception):
    """A webhook target the policy refuses; ``reason`` says which rule and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def ip_literal(host: str) -> IP | None:
    """The address a host *is* when it is written as one. Besides the usual forms, the resolver
    (``inet_aton``) takes shorthand such as ``127.1``, ``2130706433`` or ``0x7f.0.0.1``."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def unsafe(ip: IP) -> str | None:
    """Why a webhook must not go to this address, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (why := unsafe(embedded)) is not None:
            return f"{why} (inside the IPv6 address {ip})"
    if ip in METADATA:
        return "a cloud metadata address"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),  # e.g. 100.64.0.0/10, shared (CGNAT)
    )
    return next((why for bad, why in checks if bad), None)


_FIX = (
    "webhooks go only to public https endpoints; an operator can allow a host with "
    "MILESTONES_WEBHOOK_ALLOW_HOSTS"
)


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    allow_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_setting(cls, text: str) -> TargetPolicy:
        """``"host[,host...]"`` (IPv6 with or without brackets; case and a final dot ignored)."""
        return cls(frozenset(normal_host(h) for h in text.split(",") if h.strip()))

    def allowed(self, host: str) -> bool:
        return normal_host(host) in self.allow_hosts

    def check_url(self, url: str) -> None:
        """Refuse (``TargetRefused``) what is unsafe whatever DNS says; hostnames are checked
        again, resolved, when a webhook is sent."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise TargetRefused(f"webhook url is not a valid URL: {exc}") from None
        host = normal_host(parsed.host)
        if not host:
            raise TargetRefused("webhook url has no host")
        if self.allowed(host):
            return
        if parsed.scheme != "https":
            raise TargetRefused(
                f"webhook url must use https, not {parsed.scheme}: only hosts the operator "
                "allow-lists (MILESTONES_WEBHOOK_ALLOW_HOSTS) may take http"
            )
        self._check_name(host)

    def _check_name(self, host: str) -> IP | None:
        if LOOPBACK_NAMES.match(host):
            raise TargetRefused(f"webhook target {host} is a loopback name: {_FIX}")
        ip = ip_literal(host)
        if ip is not None and (why := unsafe(ip)) is not None:
            raise TargetRefused(f"webhook target {host} is {why}: {_FIX}")
        return ip

    async def addresses(self, host: str, port: int, resolver: Resolver) -> list[str]:
        """The addresses to connect to: the literal itself, or every address the host resolves
        to, each checked (an allow-listed host is resolved but not checked). ``OSError`` when it
        does not resolve."""
        name = normal_host(host)
        allowed = self.allowed(name)
        literal = ip_literal(name) if allowed else self._check_name(name)
        if literal is not None:
            return [str(literal)]
        found = list(dict.fromkeys(await resolver(name, port)))
        if not found:
            raise OSError(f"{name} resolves to no address")
        if not allowed:
            for address in found:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
                if (why := unsafe(ip)) is not None:
                    raise TargetRefused(
                        f"webhook target {name} resolves to {address}, {why}: {_FIX}"
                    )
        return found


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, with the TCP connect given a checked address instead of the
    hostname (one lookup per new connection; kept-alive connections stay on their address)."""

    def __init__(
        self,
        policy: TargetPolicy,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.policy.addresses(host, port, self.resolver)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout}s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        failure: Exception | None = None
        for address in addresses:  # in the resolver's order, as a plain connect would
            try:
                return await self.inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a ``PinnedBackend``. httpx has no public setting for the network
    backend, so the connection pool it builds is replaced by one built the same way with ours
    (tests/test_secrets.py checks that the connect gets the checked address)."""

    def __init__(
        self,
        policy: TargetPolicy,
        resolver: Resolver = system_resolver,
        *,
        limits: httpx.Limits,
        inner: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # trust_env=False: a proxy from the environment would make the connect go elsewhere
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(policy, resolver, inner),
        )
