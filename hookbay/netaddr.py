"""Client address resolution: proxy headers count only when the socket peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(i.strip(), strict=False) for i in items if i.strip())


def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    t = text.strip().strip('"')
    if t.startswith("["):
        t = t[1:].split("]", 1)[0]
    elif t.count(":") == 1:
        t = t.split(":", 1)[0]
    try:
        a = ipaddress.ip_address(t)
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def in_networks(addr: str | None, nets: tuple[Network, ...]) -> bool:
    a = _addr(addr) if addr else None
    return a is not None and any(a in n for n in nets)


def _forwarded_for(value: str) -> list[str]:
    out = []
    for element in value.split(","):
        for pair in element.split(";"):
            k, _, v = pair.strip().partition("=")
            if k.lower() == "for":
                out.append(v.strip().strip('"'))
    return out


def client_address(peer: str | None, headers: list[tuple[bytes, bytes]], trusted: tuple[Network, ...]) -> str | None:
    """Walk the proxy chain from the right, skipping trusted proxies; the first untrusted hop is
    the client. With no trusted proxies configured, the socket peer is the client."""
    if not trusted or not in_networks(peer, trusted):
        return peer
    chain: list[str] = []
    for k, v in headers:
        name = k.lower()
        if name == b"x-forwarded-for":
            chain.extend(p.strip() for p in v.decode("latin-1").split(",") if p.strip())
        elif name == b"forwarded":
            chain.extend(_forwarded_for(v.decode("latin-1")))
    for hop in reversed(chain):
        a = _addr(hop)
        if a is None:
            return peer
        if not any(a in n for n in trusted):
            return str(a)
    return str(_addr(chain[0])) if chain and _addr(chain[0]) else peer
