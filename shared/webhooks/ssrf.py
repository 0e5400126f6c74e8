"""Refuse callback URLs that point into our own network, before any connection is made.

Checked at submit time (422) and again right before each send, because DNS may answer
differently later. Redirects are never followed (a 3xx is a failed attempt), so a public URL
cannot bounce the request inside.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class UnsafeURL(ValueError):
    """The URL may not be called: bad scheme, unresolvable, or a non-public address."""


@dataclass(frozen=True)
class AllowList:
    """Operator exceptions: networks (CIDR or single address) and host names."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, items: str | Iterable[str]) -> AllowList:
        """Build from ``"10.1.0.0/16, 127.0.0.1, hooks.internal"`` (a comma-separated setting)."""
        if isinstance(items, str):
            items = items.split(",")
        networks = []
        hosts = set()
        for raw in items:
            item = raw.strip().strip("[]")
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


def _default_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public(ip: IPAddress) -> bool:
    """Tell whether ``ip`` is a public unicast address (not private, loopback, link-local…)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_url(
    url: str,
    *,
    allow_http: bool = False,
    allow: AllowList | None = None,
    resolve: Resolver | None = None,
) -> list[str]:
    """Return the addresses ``url`` resolves to; raise UnsafeURL if it must not be called."""
    allow = allow or AllowList()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("callback url is malformed") from None
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_http):
        raise UnsafeURL("callback url must use https")
    if parts.username or parts.password:
        raise UnsafeURL("callback url must not carry credentials")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UnsafeURL("callback url has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and host in allow.hosts:
        return []
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = (resolve or _default_resolver)(host, port)
        except (OSError, UnicodeError):
            raise UnsafeURL(f"callback host {host} does not resolve") from None
        if not addresses:
            raise UnsafeURL(f"callback host {host} does not resolve")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not is_public(ip) and not allow.allows_ip(ip):
            raise UnsafeURL(f"callback host {host} is not a public address")
    return addresses
