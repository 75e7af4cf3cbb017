"""Outbound destination guard: tenants configure forward URLs, so a URL must not let them reach the
host's own services, the private network or the cloud metadata endpoint (SSRF).

Every address the host resolves to is checked, not just the first, because the HTTP client may
connect to any of them; numeric oddities like ``127.1`` or ``2130706433`` are caught because the
check runs on what ``getaddrinfo`` returns. The URL is parsed with httpx, the client that makes the
request, so the host checked is the host connected to.

:func:`check_destination` runs before connecting: the caller must not follow redirects without
checking each hop. A DNS answer that changes between check and connect (rebinding) is caught after
connecting by :func:`check_peer`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.request
from typing import Any

import httpx

__all__ = ["DestinationRefused", "check_destination", "is_public_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_BLOCKED = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast 255.255.255.255
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_BLOCKED = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: the IPv4 address is embedded


class DestinationRefused(ValueError):
    """The URL may not be used as an outbound destination; the message says why."""


def _parse(ip: str) -> IPAddress | None:
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # zone id of a link-local address (fe80::1%eth0)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _public(addr: IPAddress) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            return _public(embedded)
        # Outside 2000::/3 is loopback, unspecified, ULA fc00::/7, link-local fe80::/10, multicast
        # ff00::/8 or reserved.
        return addr in _V6_GLOBAL_UNICAST and not any(addr in n for n in _V6_BLOCKED)
    return not any(addr in n for n in _V4_BLOCKED)


def is_public_address(ip: str) -> bool:
    """True when ``ip`` is a globally routable unicast address; False for anything else, including
    text that is not an address. IPv4 embedded in IPv6 (mapped, 6to4, NAT64) is judged as IPv4."""
    addr = _parse(ip)
    return addr is not None and _public(addr)


class UnresolvedHost(DestinationRefused):
    """The name did not resolve (a timeout, a resolver failure, or NXDOMAIN). Unlike a refused
    address this is retried like any network error: resolvers fail for a while, and a record can
    appear; only when the retries run out is the delivery dead."""


async def getaddrinfo(host: str, port: int) -> list[Any]:
    """The resolver the guard asks (a module attribute, so a test can put a resolver it controls
    in its place)."""
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


async def check_destination(url: str, *, allow_private: bool, resolve_timeout: float = 10.0) -> None:
    """Raise :class:`DestinationRefused` unless ``url`` is an http(s) URL without credentials whose
    host resolves only to public addresses (``allow_private`` lifts the address check)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise DestinationRefused(f"invalid URL: {e}") from None
    if parsed.scheme not in ("http", "https"):
        shown = parsed.scheme or "(none)"
        raise DestinationRefused(f"URL scheme must be http or https, not {shown}")
    if parsed.userinfo:
        raise DestinationRefused("URL must not contain credentials; configure authentication separately")
    if not parsed.raw_host:
        raise DestinationRefused("URL has no host")
    if allow_private:
        return
    host = parsed.raw_host.decode("ascii")
    literal = _parse(host)
    if literal is not None:
        if not _public(literal):
            raise DestinationRefused(f"{host} is not a public address (private destinations are not allowed)")
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(resolve_timeout):
            infos = await getaddrinfo(host, port)
    except TimeoutError:
        raise UnresolvedHost(
            f"cannot resolve host {host!r}: timed out after {resolve_timeout:g} s"
        ) from None
    except UnicodeError as e:
        raise DestinationRefused(f"cannot resolve host {host!r}: {e}") from None
    except OSError as e:
        raise UnresolvedHost(f"cannot resolve host {host!r}: {e.strerror or e}") from None
    if not infos:
        raise UnresolvedHost(f"cannot resolve host {host!r}: no addresses")
    for *_, sockaddr in infos:
        addr = _parse(str(sockaddr[0]))
        if addr is None or not _public(addr):
            raise DestinationRefused(
                f"host {host!r} resolves to {sockaddr[0]}, which is not a public address "
                "(private destinations are not allowed)"
            )


def check_peer(r: httpx.Response, url: str, allow_private: bool) -> None:
    """The address actually connected to must pass the guard too (a DNS answer can change between
    the check and the connect); otherwise the answer is dropped unread. Skipped behind an HTTP proxy,
    whose own address is what the connection reports."""
    if allow_private:
        return
    u = httpx.URL(url)
    if urllib.request.getproxies().get(u.scheme) and not urllib.request.proxy_bypass(u.host):
        return
    stream = r.extensions.get("network_stream")
    addr = stream.get_extra_info("server_addr") if stream is not None else None
    if addr and not is_public_address(str(addr[0])):
        raise DestinationRefused(f"connected to {addr[0]}, which is not a public address; the answer was discarded")
