"""The ingest endpoint: plain ASGI on the hot path.

Checks run in the SPEC's order; the first failure answers. A 2xx is sent only after the writer
has committed the raw request and its job. Rejections are logged with the rule that failed,
except unknown tokens, which are only counted (a scanner must not be able to fill the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog

from hookbay import metrics
from hookbay.errors import (
    Forbidden,
    HookbayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StorageUnavailable,
    Unauthorized,
    WriteTimeout,
    error_body,
)
from hookbay.ids import new_request_id, now_us
from hookbay.ingest import senders as edge_io
from hookbay.ingest.asgi import Receive, Scope, Send, send_json, send_raw
from hookbay.ingest.ratelimit import RateLimiter, SharedRateLimiter
from hookbay.netaddr import client_address, in_networks, parse_networks
from hookbay.parsers.formats import check_well_formed
from hookbay.senders import (
    HandshakeRefused,
    body_key,
    honeypot_filled,
    key_text,
    prefers_html,
    query_params,
    redirect_to,
    unsigned_shape,
)
from hookbay.senders import reply as handshake_reply
from hookbay.settings import Settings
from hookbay.store import Store, hash_secret
from hookbay.store.errors import describe
from hookbay.store.requests import RequestRow
from hookbay.store.sources import ActiveSource, Edge, SourceCache
from hookbay.views import Receipt, iso

log = structlog.get_logger("hookbay.ingest")

NOT_FOUND_BODY = orjson.dumps(NotFound().to_dict())


def dry_run(body: bytes, content_type: str | None, src: ActiveSource, settings: Settings) -> dict[str, Any]:
    """What a body would become, storing nothing and running no action: the answer of
    ``/V1/Test`` and of the console's mapping playground."""
    from hookbay.actions.planner import plan
    from hookbay.processing.worker import parse_body

    out = parse_body(body, content_type, src)
    actions = [{"record_idx": d.record_idx, "action_idx": d.action_idx, "action_type": d.action_type,
                "action_name": d.action_name} for d in plan(out.records, src.config.actions, settings)]
    return {"state": out.state, "stored": False, "records": out.records, **out.receipt.as_dict(),
            "actions": actions}


class ClientGone(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    """Read the body, failing as soon as it passes ``limit`` so nothing unbounded is buffered."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(detail={"limit_bytes": limit})
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header_map(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Every header the checks look at, by lower-case name, built once per request (first wins)."""
    return {k.lower(): v for k, v in reversed(headers)}


_API_KEY_IN_QUERY = re.compile(r"((?:^|&)api-key=)[^&]*")


def _wants_wait(qs: bytes) -> bool:
    return any(k == "wait" and v.lower() in ("1", "true", "yes") for k, v in parse_qsl(qs.decode("latin-1")))


class Ingest:
    def __init__(self, store: Store, cache: SourceCache, settings: Settings) -> None:
        self.store = store
        self.cache = cache
        self.settings = settings
        self.accepted = 0
        self.inflight = 0
        self.inflight_peak = 0
        self.process_now: Callable[[str], Awaitable[Receipt]] | None = None
        self.parse_off_loop: Callable[..., Awaitable[Any]] | None = None
        self.limiter = RateLimiter()
        # PostgreSQL: sources' rate limits hold across processes and machines (one shared bucket).
        self.shared_limiter = SharedRateLimiter(store.lease_rate_tokens) if store.is_postgres else None
        self.address_limiter = edge_io.AddressLimiter()
        self.trusted = parse_networks(settings.trusted_proxy_list)

    async def handle(self, scope: Scope, receive: Receive, send: Send, token: str, *, test: bool = False) -> None:
        self.inflight += 1
        if self.inflight > self.inflight_peak:
            self.inflight_peak = self.inflight
        try:
            await self._handle(scope, receive, send, token, test)
        except Exception as e:  # a bug must still answer in the one JSON shape, never plain text
            log.error("ingest_failed", test=test, **describe(e))
            with contextlib.suppress(Exception):  # unless the answer had already started
                await send_json(send, 500, error_body("internal_error", "Internal server error"))
        finally:
            self.inflight -= 1

    def take_inflight_peak(self) -> int:
        """Most requests in flight at once since the last call. Group commit answers requests in
        waves, so at any one instant even a saturated ingest may have none in flight."""
        peak, self.inflight_peak = self.inflight_peak, self.inflight
        return peak

    async def _handle(self, scope: Scope, receive: Receive, send: Send, token: str, test: bool) -> None:
        """``test``: the ``/V1/Test`` endpoint — same checks, then the parser's answer; nothing stored."""
        start = time.perf_counter()
        src = self.cache.by_token.get(token.lower())
        if src is None:
            src = await self.cache.lookup_unknown(token)
        if src is None:
            metrics.unknown_tokens_total.inc()
            await send_raw(send, 404, NOT_FOUND_BODY)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        hmap = scope["hookbay.headers"] = _header_map(headers)
        body: bytes | None = None
        client = scope.get("client")
        peer = client_address(client[0] if client else None, headers, self.trusted)
        scope["hookbay.peer"] = peer
        edge = src.edge
        cors: dict[str, str] | None = None
        params: dict[str, str] = {}
        unsigned = False
        method = scope["method"]
        try:
            if edge is not None:
                cors = edge_io.cors_headers(edge, hmap.get(b"origin"), src.allow_header)
                if cors is not None and method == "OPTIONS" and b"access-control-request-method" in hmap:
                    await edge_io.send_preflight(send, edge, cors, src.allow_header,
                                                 hmap.get(b"access-control-request-headers"))
                    return
                if edge.handshake is not None and scope.get("query_string"):
                    params = query_params(scope["query_string"])
            if method not in src.methods and not (method == "GET" and params and edge is not None
                                                  and edge.handshake is not None
                                                  and unsigned_shape(edge.handshake.type, "GET", params, b"")):
                raise MethodNotAllowed(
                    f"{method} is not allowed for this source", headers={"Allow": src.allow_header}
                ).with_rule("method")
            if src.networks and not in_networks(peer, src.networks):
                raise Forbidden("Your address is not allowed to post to this source").with_rule("ip_allowlist")
            for name, want in src.required_headers:
                got = hmap.get(name)
                if got is None or not hmac.compare_digest(got, want):
                    raise Forbidden("A required header is missing or has the wrong value",
                                    detail={"header": name.decode("latin-1")}).with_rule("required_header")
            if src.api_key_hash is not None:
                self._check_api_key(scope, hmap, src)
            clen = hmap.get(b"content-length")
            if clen is not None and clen.isdigit() and int(clen) > src.max_body:
                raise PayloadTooLarge(detail={"limit_bytes": src.max_body}).with_rule("body_size")
            try:
                body = await read_body(receive, src.max_body)
            except PayloadTooLarge as e:
                raise e.with_rule("body_size") from None
            decoded = body
            cenc = hmap.get(b"content-encoding")
            if cenc is not None:
                decoded = await self._decode(cenc, body, src.max_body, scope)
            if src.rate is not None and not test:
                if self.shared_limiter is not None:
                    wait_s = await self.shared_limiter.check(src.id, src.rate, src.burst)
                else:
                    wait_s = self.limiter.check(src.id, src.rate, src.burst)
                if wait_s > 0:
                    raise RateLimited(headers={"Retry-After": str(max(1, math.ceil(wait_s)))}).with_rule("rate_limit")
            if edge is not None and edge.rate_per_ip is not None and not test:
                wait_s = self.address_limiter.check(src.id, peer, edge.rate_per_ip, edge.burst_per_ip)
                if wait_s > 0:
                    raise RateLimited(headers={"Retry-After": str(max(1, math.ceil(wait_s)))}).with_rule("rate_per_ip")
            if edge is not None and edge.handshake is not None:
                unsigned = unsigned_shape(edge.handshake.type, method, params, decoded)
            ping = src.signature is not None and not unsigned and self._check_signature(src, hmap, decoded, body)
            ctype = hmap.get(b"content-type")
            ctype_s = ctype.decode("latin-1") if ctype is not None else None
            fmt = src.config.format
            if not unsigned and (fmt != "auto" or ctype_s is not None):
                try:
                    check_well_formed(decoded, ctype_s, fmt)
                except HookbayError as e:
                    raise e.with_rule("format") from None
        except ClientGone:
            return
        except HookbayError as e:
            if not test:
                await self._reject(scope, src, body, e)
            await send_json(send, e.status, e.to_dict(), {**e.headers, **cors} if cors else e.headers)
            return

        if test:
            try:
                if self.parse_off_loop is not None:
                    payload = await self.parse_off_loop(dry_run, decoded, ctype_s, src, self.settings)
                else:
                    payload = dry_run(decoded, ctype_s, src, self.settings)
            except HookbayError as e:
                log.info("test_parse_refused", source_id=src.id, code=e.code)
                await send_json(send, e.status, e.to_dict(), e.headers)
                return
            await send_json(send, 200 if payload["state"] == "processed" else 422, payload)
            return

        row = self._row(scope, src, body, "accepted", None, 200, "ping" if ping else "pending")
        if edge is not None:
            if await self._edge_row(scope, send, src, edge, row, hmap, decoded, ctype_s, params, cors):
                return
        for name in src.idempotency_headers:
            v = hmap.get(name)
            if v:
                row["idempotency_key"] = v.decode("latin-1")[:200]
                break
        try:
            # A relay source's accepted row is queued for `hookbay agent` in the same commit.
            request_id = await self.store.writer.ingest(row, self.settings.write_timeout, relay=src.config.relay)
        except StorageUnavailable as err:
            metrics.storage_errors_total.inc()
            if isinstance(err, WriteTimeout):  # the id it has if the commit still lands
                err.detail = {**(err.detail or {}), "request_id": row["id"]}
            log.error("ingest_storage_unavailable", source_id=src.id, request_id=row["id"], detail=err.detail)
            err.headers["Retry-After"] = str(self.settings.retry_after)
            await send_json(send, err.status, err.to_dict(), err.headers)
            return
        self.accepted += 1
        metrics.count_request(src.id, row["verdict"])
        metrics.observe_ack(time.perf_counter() - start)
        rid = request_id.encode()
        qs = scope.get("query_string")
        if (src.config.sync or (qs and _wants_wait(qs))) and self.process_now is not None and row["state"] != "spam":
            try:
                receipt = await self.process_now(request_id)
            except HookbayError as e:
                log.warning("wait_parse_refused", source_id=src.id, request_id=request_id, code=e.code)
                e.detail = {**(e.detail or {}), "request_id": request_id, "stored": True}
                e.message = f"{e.message}; request {request_id} is stored and will be processed in the background"
                await send_json(send, e.status, e.to_dict(), {**e.headers, "X-Request-Id": request_id})
                return
            except Exception as e:  # stored and acknowledged; the worker retries it in the background
                log.error("wait_processing_failed", request_id=request_id, error=type(e).__name__)
                failure = HookbayError("processing failed unexpectedly; the request is stored and will be retried",
                                       detail={"request_id": request_id})
                await send_json(send, failure.status, failure.to_dict(), {"X-Request-Id": request_id})
                return
            status = 422 if receipt.state == "failed" else 200
            await send_json(send, status, {"status": "accepted", "request_id": request_id, "receipt": receipt},
                            {"X-Request-Id": request_id, **(cors or {})})
            return
        if edge is not None:
            await self._edge_answer(scope, send, src, edge, request_id, row["received_at"], cors)
            return
        await send_raw(
            send, 200, b'{"status":"accepted","request_id":"' + rid + b'"}', extra=[(b"x-request-id", rid)]
        )

    async def _edge_row(self, scope: Scope, send: Send, src: ActiveSource, edge: Edge, row: RequestRow,
                        hmap: dict[bytes, bytes], body: bytes, ctype: str | None, params: dict[str, str],
                        cors: dict[str, str] | None) -> bool:
        """Dedupe key, honeypot and handshake for a source that uses them; True when answered here."""
        doc = await edge_io.parse_doc(body, ctype) if edge.needs_doc else None
        if edge.key is not None:
            if edge.key.header is not None:
                v = hmap.get(edge.key.header)
                row["idempotency_key"] = key_text(v.decode("latin-1")) if v else None
            else:
                row["idempotency_key"] = body_key(doc, edge.key)
        if edge.honeypot is not None and honeypot_filled(doc, edge.honeypot):
            row["verdict"] = row["state"] = "spam"
            row["idempotency_key"] = None
            log.info("ingest_spam", request_id=row["id"], source_id=src.id, rule="honeypot")
        if edge.handshake is None:
            return False
        try:
            if edge.handshake.type == "zoom" and isinstance(doc, dict) and doc.get("event") == "endpoint.url_validation":
                edge_io.check_zoom_signature(hmap, body, src.active_secrets(now_us()))
            answer = handshake_reply(edge.handshake, scope["method"], params, doc, src.active_secrets(now_us()))
        except HandshakeRefused:
            e = Forbidden("The verify token does not match").with_rule("handshake")
            await self._reject(scope, src, body, e)
            await send_json(send, e.status, e.to_dict())
            return True
        except HookbayError as e:
            await self._reject(scope, src, body, e)
            await send_json(send, e.status, e.to_dict(), e.headers)
            return True
        if answer is None:
            return False
        row["state"] = "handshake"
        row["idempotency_key"] = None
        try:
            rid = await self.store.writer.ingest(row, self.settings.write_timeout)
        except StorageUnavailable as err:
            err.headers["Retry-After"] = str(self.settings.retry_after)
            await send_json(send, err.status, err.to_dict(), err.headers)
            return True
        log.info("ingest_handshake", request_id=rid, source_id=src.id, provider=edge.handshake.type)
        await send_raw(send, answer.status, answer.body,
                       [*answer.headers, *edge_io.SANDBOXED, (b"x-request-id", rid.encode())],
                       content_type=answer.content_type)
        return True

    async def _edge_answer(self, scope: Scope, send: Send, src: ActiveSource, edge: Edge, request_id: str,
                           received_at: int, cors: dict[str, str] | None) -> None:
        """After the commit: a redirect for an HTML form, the source's own response, or the JSON."""
        extra = [(b"x-request-id", request_id.encode())]
        if cors:
            extra += [(k.lower().encode(), v.encode("latin-1")) for k, v in cors.items()]
        if edge.redirect_url is not None and prefers_html(scope["hookbay.headers"].get(b"accept")):
            extra.append((b"location", redirect_to(edge.redirect_url, request_id).encode("latin-1")))
            await send_raw(send, 303, b"", extra, content_type=b"text/plain")
            return
        if edge.answer is not None:
            try:
                body = edge.answer.render(request_id, iso(received_at) or "", src.id, src.name)
            except Exception as e:  # stored already: the sender still learns it was accepted
                log.warning("response_template_failed", request_id=request_id, source_id=src.id,
                            error=type(e).__name__)
            else:  # the tenant chose the type: never a live page on this origin (the console shares it)
                await send_raw(send, edge.answer.status, body, [*extra, *edge_io.SANDBOXED],
                               content_type=edge.answer.content_type)
                return
        await send_raw(send, 200, b'{"status":"accepted","request_id":"' + request_id.encode() + b'"}', extra)

    @staticmethod
    async def _decode(header: bytes, body: bytes, limit: int, scope: Scope) -> bytes:
        """Decode off the event loop (bounded by ``limit`` as it goes); the raw bytes stay the stored body."""
        from hookbay.decompress import decode, normalise

        try:
            enc = normalise(header)
            if enc is None:
                return body
            scope["hookbay.encoding"] = enc
            return await asyncio.to_thread(decode, body, enc, limit)
        except PayloadTooLarge as e:
            raise e.with_rule("body_size") from None
        except HookbayError as e:
            raise e.with_rule("content_encoding") from None

    def _check_signature(self, src: ActiveSource, hmap: dict[bytes, bytes], body: bytes,
                         raw: bytes | None = None) -> bool:
        """True for an unsigned WooCommerce ping: stored, never processed. With a Content-Encoding,
        providers sign the payload (``body``, decoded); a sender that signed the bytes on the wire
        (``raw``) is accepted too: both take the secret."""
        from hookbay.signatures import SignatureError, verify

        spec = src.signature
        assert spec is not None  # called only for a source that has a scheme
        text = {k.decode("latin-1"): v.decode("latin-1") for k, v in hmap.items()}
        secrets = src.active_secrets(now_us())
        try:
            try:
                return verify(spec, secrets, text, body).ping
            except SignatureError:
                if raw is None or raw is body:
                    raise
                return verify(spec, secrets, text, raw).ping
        except SignatureError as e:
            raise Unauthorized("Invalid signature", detail={"reason": e.reason}).with_rule("signature") from None

    def _check_api_key(self, scope: Scope, hmap: dict[bytes, bytes], src: ActiveSource) -> None:
        key = hmap.get(b"x-api-key")
        given = key.decode("latin-1") if key else None
        if given is None and scope.get("query_string"):
            for k, v in parse_qsl(scope["query_string"].decode("latin-1")):
                if k == "api-key":
                    given = v
                    break
        if given is None or not hmac.compare_digest(hash_secret(given), src.api_key_hash or ""):
            raise Unauthorized("Missing or invalid API key").with_rule("api_key")

    def _row(
        self, scope: Scope, src: ActiveSource, body: bytes | None, verdict: str, rule: str | None,
        status: int, state: str,
    ) -> RequestRow:
        headers = scope["headers"]
        ctype = scope["hookbay.headers"].get(b"content-type")
        query = scope.get("query_string", b"").decode("latin-1")
        if "api-key" in query:
            query = _API_KEY_IN_QUERY.sub(r"\1[redacted]", query)
        row: RequestRow = {
            "id": new_request_id(),
            "source_id": src.id,
            "client_id": src.client_id,
            "received_at": now_us(),
            "method": scope["method"],
            "path": scope.get("raw_path", b"").decode("latin-1") if scope.get("raw_path") else scope["path"],
            "query": query,
            "headers": orjson.dumps([[k.decode("latin-1"), v.decode("latin-1") if k.lower() != b"x-api-key"
                                      else "[redacted]"] for k, v in headers]).decode(),
            "peer": scope.get("hookbay.peer"),
            "content_type": ctype.decode("latin-1")[:200] if ctype else None,
            "content_encoding": scope.get("hookbay.encoding"),
            "body": body,
            "body_size": len(body) if body is not None else 0,
            "verdict": verdict,
            "rule": rule,
            "status": status,
            "state": state,
            "idempotency_key": None,
            "duplicate_of": None,
            "receipt": None,
            "processed_at": None,
            "key_id": None,
        }
        self.store.seal_request_row(row)
        return row

    async def _reject(self, scope: Scope, src: ActiveSource, body: bytes | None, e: HookbayError) -> None:
        rule = getattr(e, "rule", None) or e.code
        metrics.count_request(src.id, "rejected")
        row = self._row(scope, src, body, "rejected", rule, e.status, "rejected")
        row["receipt"] = orjson.dumps({"errors": [{"path": "$", "code": e.code, "message": e.message,
                                                   **({"detail": e.detail} if e.detail is not None else {})}],
                                       "warnings": []}).decode()
        reason = e.detail.get("reason") if isinstance(e.detail, dict) else None
        log.info("ingest_rejected", request_id=row["id"], source_id=src.id, rule=rule, status=e.status,
                 **({"reason": reason} if isinstance(reason, str) else {}))
        try:
            await self.store.writer.ingest(row, self.settings.write_timeout)
        except StorageUnavailable:
            log.error("reject_log_failed", request_id=row["id"], source_id=src.id, rule=rule)
