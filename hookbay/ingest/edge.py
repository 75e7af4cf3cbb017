"""Connection limits of the HTTP server: deadlines, header bounds and how many sockets may be open.

One ``Edge`` per listening server counts open connections by client address, so one client
cannot hold every file descriptor (slowloris); when the server is full, the connection that has
waited longest for a request head makes room for a new one, and the admin API keeps a share of
its own when every ingest connection is busy.
The protocol (``hookbay.ingest.protocol``) enforces the deadlines and header bounds.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

from hookbay.errors import error_bytes
from hookbay.netaddr import Network, in_networks, parse_networks

ADMIT, RESERVED, REFUSE = 0, 1, 2

FD_SHARE = 0.8  # of RLIMIT_NOFILE for client sockets; the rest is for the database, logs and outbound calls


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one (many systems default the soft one to 1024)
    and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(wanted: int, nofile: int) -> int:
    """``wanted``, but never more than FD_SHARE of the open-files limit."""
    if nofile == resource.RLIM_INFINITY or nofile <= 0:
        return wanted
    return max(1, min(wanted, int(nofile * FD_SHARE)))


def response(status: int, reason: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    """A complete ``connection: close`` response in the one JSON error shape, written by the
    protocol itself (no app runs for these)."""
    body = error_bytes(code, message)
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n"
            % (status, reason, len(body), extra)) + body


TOO_MANY_CONNECTIONS = response(
    503, b"Service Unavailable", "too_many_connections", "Too many open connections; retry later",
    b"retry-after: 5\r\n")
HEADERS_TOO_LARGE = response(
    431, b"Request Header Fields Too Large", "headers_too_large", "The request headers are too large or too many")
REQUEST_TIMEOUT = response(408, b"Request Timeout", "request_timeout", "The request was not received in time")


@dataclass
class Edge:
    """Limits and open-connection counts shared by every connection of one server."""

    header_timeout: float = 10.0
    body_idle_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_connections: int = 10000
    per_client: int = 256
    admin_reserved: int = 32
    trusted: tuple[Network, ...] = ()
    linger_seconds: float = 2.0
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)
    waiting: dict[Any, None] = field(default_factory=dict)  # connections waiting for a request head, oldest first

    @classmethod
    def from_settings(cls, settings: Any) -> Edge:
        cap = connection_cap(settings.max_connections, raise_nofile_limit())
        return cls(
            header_timeout=settings.header_timeout, body_idle_timeout=settings.body_idle_timeout,
            max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
            max_connections=cap, per_client=settings.max_connections_per_client,
            admin_reserved=min(settings.admin_reserved_connections, cap - 1),
            trusted=parse_networks(settings.trusted_proxy_list),
        )

    def admit(self, conn: Any, peer: str) -> int:
        """Count a new connection. Over the per-client cap: REFUSE. Over the ingest share
        (``max_connections - admin_reserved``): the connection that has waited longest for a
        request head is shed to make room; with none to shed, RESERVED (admin API and health
        checks only) up to ``max_connections`` and REFUSE beyond."""
        n = self.by_client.get(peer, 0)
        self.by_client[peer] = n + 1
        self.open += 1
        if n >= self.per_client and peer and not in_networks(peer, self.trusted):
            return REFUSE
        if self.open > self.max_connections - self.admin_reserved:
            if self.waiting:
                next(iter(self.waiting)).evict()
                return ADMIT
            return RESERVED if self.open <= self.max_connections else REFUSE
        return ADMIT

    def release(self, peer: str) -> None:
        self.open -= 1
        n = self.by_client.get(peer, 1) - 1
        if n > 0:
            self.by_client[peer] = n
        else:
            self.by_client.pop(peer, None)
