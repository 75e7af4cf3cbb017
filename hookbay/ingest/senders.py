"""The ingest side of ``hookbay.senders``: CORS, per-address limits, the body parse for dedupe keys
and the honeypot, and the answers (redirect, custom response, handshake). Only sources whose
config uses one of these (``ActiveSource.edge``) ever reach this module."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections import OrderedDict
from typing import Any

from hookbay.errors import Forbidden, Unauthorized
from hookbay.ingest.asgi import Send
from hookbay.ingest.ratelimit import TokenBucket
from hookbay.senders import parse_small
from hookbay.store.sources import Edge

# Custom answers and echoed challenges are tenant- or sender-chosen bytes served from hookbay's own
# origin: a browser must never run them as a page (XHTML in text/xml runs scripts too).
SANDBOXED = ((b"content-security-policy", b"sandbox; default-src 'none'"),)
INLINE_PARSE_MAX = 16 * 1024  # larger bodies are parsed in a thread: nothing slow on the event loop


class OriginNotAllowed(Forbidden):
    code = "origin_not_allowed"
    message = "This origin is not allowed to post to this source"


def cors_headers(edge: Edge, origin: bytes | None, methods: str) -> dict[str, str] | None:
    """Headers for an allowed browser origin; ``None`` when the request has no ``Origin`` (server to
    server, unaffected); raises ``OriginNotAllowed`` for any other origin."""
    if origin is None or not (edge.origins or edge.any_origin):
        return None
    o = origin.decode("latin-1").lower().rstrip("/")
    if o not in edge.origins and not edge.any_origin:
        raise OriginNotAllowed(detail={"origin": o[:200]}).with_rule("origin")
    return {"Access-Control-Allow-Origin": "*" if edge.any_origin and o not in edge.origins else o,
            "Access-Control-Expose-Headers": "X-Request-Id", "Vary": "Origin"}


async def send_preflight(send: Send, edge: Edge, cors: dict[str, str], methods: str,
                         requested: bytes | None) -> None:
    allow = list(edge.allow_headers)
    if requested:
        for h in requested.decode("latin-1").lower().split(","):
            h = h.strip()
            if h and h not in allow and h in edge.allow_headers:
                allow.append(h)
    headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in cors.items()]
    headers += [(b"access-control-allow-methods", methods.encode()),
                (b"access-control-allow-headers", ", ".join(allow).encode()),
                (b"access-control-max-age", b"600")]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def address_key(peer: str | None) -> str:
    """IPv6 clients are limited per /64: one host usually holds the whole prefix."""
    if not peer:
        return ""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AddressLimiter:
    """Token buckets per (source, client address), at most ``max_keys`` of them: the least recently
    used is forgotten first (it starts full again), so many addresses cannot exhaust memory."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def check(self, source_id: str, peer: str | None, rate: float, burst: float) -> float:
        key = (source_id, address_key(peer))
        b = self._buckets.get(key)
        if b is None or b.rate != rate or b.burst != burst:
            b = self._buckets[key] = TokenBucket(rate, burst)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return b.take()


async def parse_doc(body: bytes, content_type: str | None) -> Any:
    if len(body) <= INLINE_PARSE_MAX:
        return parse_small(body, content_type)
    return await asyncio.to_thread(parse_small, body, content_type)


def check_zoom_signature(hmap: dict[bytes, bytes], body: bytes, secrets: list[str], tolerance_s: int = 300) -> None:
    """Zoom signs every event, the URL validation included: ``x-zm-signature: v0=HEX`` of
    ``v0:{x-zm-request-timestamp}:{body}`` with the secret token."""
    sig = hmap.get(b"x-zm-signature", b"").decode("latin-1")
    ts = hmap.get(b"x-zm-request-timestamp", b"").decode("latin-1")
    if not sig or not ts.isdigit():
        raise Unauthorized("Invalid signature", detail={"reason": "missing"}).with_rule("signature")
    if abs(time.time() - int(ts)) > tolerance_s:
        raise Unauthorized("Invalid signature", detail={"reason": "timestamp"}).with_rule("signature")
    msg = b"v0:" + ts.encode() + b":" + body
    for secret in secrets:
        want = "v0=" + hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
        if hmac.compare_digest(want, sig):
            return
    raise Unauthorized("Invalid signature", detail={"reason": "mismatch"}).with_rule("signature")
