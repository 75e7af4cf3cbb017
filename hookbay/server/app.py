"""The root ASGI application: ingest routes on the hand-written hot path, the web console under
``/ui/``, everything else on FastAPI.

It owns the lifespan: opening the store, loading the source cache, running the cache refresher, and
the worker: in a supervised child process by default (``workerproc``), in this event loop for
``HOOKBAY_RUN_WORKER=inline``. Parses a sender waits for (``/V1/Test``, ``?wait=1``) run in a
process pool (``parsepool``), never on this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
from http.cookies import CookieError, SimpleCookie
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hookbay import metrics
from hookbay.api.admin import create_admin_app
from hookbay.api.guard import AdminGuard
from hookbay.console import create_console_app
from hookbay.console.session import SESSION_COOKIE
from hookbay.errors import HookbayError, NotFound, StorageUnavailable, Unauthorized
from hookbay.ingest.asgi import Receive, Scope, Send, send_json, send_raw
from hookbay.ingest.endpoint import NOT_FOUND_BODY, Ingest
from hookbay.ops import partitions
from hookbay.ops.alerts import AlertEvaluator
from hookbay.ops.health import Readiness
from hookbay.ops.requests import receipt
from hookbay.ops.retention import prune_relay, purge_expired
from hookbay.ops.tokens import principal_for_token
from hookbay.processing.deliverer import Deliverer
from hookbay.processing.parsepool import ParsePool, process_for_store
from hookbay.processing.worker import ProcessingFailed, Worker, internal_error_message
from hookbay.results import ProcessResult
from hookbay.runtime import tune_interpreter
from hookbay.server.workerproc import WorkerSupervisor
from hookbay.settings import PUBLIC_URL_META, Settings
from hookbay.store import Store, hash_secret, open_store
from hookbay.store.errors import describe
from hookbay.store.relay import RelayQueue
from hookbay.store.sources import SourceCache
from hookbay.views import Receipt

log = structlog.get_logger("hookbay.app")

DOCS_PATHS = frozenset({"/api/v1/docs", "/api/v1/docs/oauth2-redirect", "/api/v1/openapi.json"})


class HookbayApp:
    def __init__(self, settings: Settings, store: Store | None = None, *, run_worker: bool | str | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings)
        self.cache = SourceCache(self.store, settings.max_body_bytes, settings.source_refresh_seconds,
                                 settings.source_check_seconds)
        self.ingest = Ingest(self.store, self.cache, settings)
        self.admin_hash: dict[str, str | None] = {"hash": None}
        self.admin = create_admin_app(self.store, self.cache, settings.base_url, self.admin_hash, settings)
        self.admin_http = AdminGuard(self.admin, self.store, self.admin_hash, settings.admin_max_body_bytes)
        self.console = create_console_app(self.store, self.cache, settings, self.admin_hash)
        if run_worker is True:  # `serve --worker`: the configured mode, or the default if that is off
            run_worker = settings.run_worker if settings.run_worker != "off" else "process"
        elif run_worker is False:
            run_worker = "off"
        self.worker_mode: str = settings.run_worker if run_worker is None else run_worker
        self.run_worker = self.worker_mode != "off"
        self.parse_pool = ParsePool(settings)
        self.supervisor: WorkerSupervisor | None = None
        self.worker = Worker(self.store, self.cache, settings, ingest_load=self.ingest.take_inflight_peak)
        self.deliverer = Deliverer(self.store, self.cache, settings)
        self.readiness = Readiness(self.store, settings.ready_max_lag_seconds)
        self.ingest.process_now = self._process_now
        self.ingest.parse_off_loop = self.parse_pool.run
        self.console.parse_off_loop = self.parse_pool.run
        self.admin.state.parse_off_loop = self.parse_pool.run
        self._tasks: list[asyncio.Task[Any]] = []
        self.generated_admin_token: str | None = None

    async def startup(self) -> None:
        await asyncio.to_thread(self.store.migrate)
        await self.store.start()
        await self._bootstrap_admin_token()
        # the CLI prints ingest URLs from this, not from its own (possibly different) HOST/PORT
        await self.store.set_meta(PUBLIC_URL_META, self.settings.base_url)
        await self.cache.reload()
        tune_interpreter(self.settings.gil_switch_interval)
        self._tasks.append(asyncio.create_task(self.cache.run(), name="source-refresh"))
        self._tasks.append(asyncio.create_task(self._gauge_loop(), name="queue-gauge"))
        await partitions.ensure_logged(self.store, self.settings)
        self._tasks.append(asyncio.create_task(partitions.keep_ahead(self.store, self.settings), name="partitions"))
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        if self.worker_mode == "inline":
            self._tasks.append(asyncio.create_task(self.worker.run(), name="worker"))
            self._tasks.append(asyncio.create_task(self.deliverer.run(), name="deliveries"))
            self._tasks.append(asyncio.create_task(AlertEvaluator(self.store, self.settings).run(), name="alerts"))
        elif self.worker_mode == "process":
            self.supervisor = WorkerSupervisor(self.settings, self.store.job_event, self.ingest.take_inflight_peak)
            self._tasks.append(asyncio.create_task(self.supervisor.run(), name="worker-supervisor"))

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        if self.supervisor is not None:
            await self.supervisor.stop()
        self.parse_pool.close()
        await self.store.close()

    async def _bootstrap_admin_token(self) -> None:
        """Use HOOKBAY_ADMIN_TOKEN if set; else generate one on first start and print it once."""
        if self.settings.admin_token:
            h = hash_secret(self.settings.admin_token)
            await self.store.set_meta("admin_token_hash", h)
        else:
            tok = "hba_" + secrets.token_urlsafe(32)
            if await self.store.set_meta_if_absent("admin_token_hash", hash_secret(tok)):
                self.generated_admin_token = tok
                print(f"hookbay: generated admin token (shown once, store it now): {tok}", flush=True)
            h = await self.store.get_meta("admin_token_hash") or ""
        self.admin_hash["hash"] = h

    async def _gauge_loop(self) -> None:
        """Queue depth for /metrics, and the admin token hash, so `hookbay token rotate-admin` run
        from another process takes effect (and retires the old token) within seconds."""
        while True:
            with contextlib.suppress(Exception):
                metrics.queue_depth.set(await self.store.queue_depth())
                counts = await self.store.delivery_counts()
                metrics.deliveries_pending.set(counts.get("pending", 0) + counts.get("running", 0))
                metrics.dead_letters.set(counts.get("dead", 0))
                ready = await RelayQueue(self.store).ready_by_source()
                metrics.relay_ready.clear()
                for source_id, n in ready.items():
                    metrics.relay_ready.labels(source_id).set(n)
                if not self.settings.admin_token:
                    self.admin_hash["hash"] = await self.store.get_meta("admin_token_hash") or self.admin_hash["hash"]
            await asyncio.sleep(2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        typ = scope["type"]
        if typ == "http":
            path: str = scope["path"]
            lower = path.lower()
            if lower.startswith("/v1/data/"):
                token = path[9:]
                if token[:8].lower() == "webhook/":
                    token = token[8:]
                await self.ingest.handle(scope, receive, send, token.rstrip("/"))
                return
            if lower.startswith("/v1/test/"):
                await self.ingest.handle(scope, receive, send, path[9:].rstrip("/"), test=True)
                return
            if lower.startswith("/v1/requests/") and scope["method"] == "GET":
                await self._receipt(scope, send, path[13:].rstrip("/"))
                return
            if path == "/healthz":
                await send_raw(send, 200, b'{"status":"ok"}')
                return
            if path == "/readyz":
                await self._ready(send)
                return
            if path == "/metrics":
                if self.settings.metrics_token and not _bearer_is(scope, self.settings.metrics_token):
                    e = Unauthorized("Missing or invalid metrics token", headers={"WWW-Authenticate": "Bearer"})
                    await send_json(send, e.status, e.to_dict(), e.headers)
                    return
                await send_raw(send, 200, generate_latest(metrics.registry),
                               content_type=CONTENT_TYPE_LATEST.encode())
                return
            if path == "/ui" or path.startswith("/ui/"):
                await self.console(scope, receive, send)  # the web console: its own app, not in the OpenAPI
                return
            if path in DOCS_PATHS and not self.settings.public_docs and not await self._signed_in(scope):
                e = Unauthorized("The API docs are for signed-in users", headers={"WWW-Authenticate": "Bearer"})
                await send_json(send, e.status, e.to_dict(), e.headers)
                return
            await self.admin_http(scope, receive, send)
            return
        if typ == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.admin(scope, receive, send)

    async def _process_now(self, request_id: str) -> Receipt:
        """``?wait=1``: process this request in the ingest call (parsed in the pool, under the CPU
        budget), then answer with its receipt. Over budget, the job goes back to the worker."""
        jobs = await self.store.claim_job_for(request_id, self.worker.worker_id, self.settings.job_lease_seconds)
        if jobs:
            req = (await self.store.load_requests([request_id]))[request_id]
            src = await self.cache.get_by_id(req.source_id) if req.source_id else None
            try:
                res: ProcessResult = await self.parse_pool.run(process_for_store, req, src, self.settings)
                await self.worker.route_providers(res)
            except HookbayError as e:  # over budget, or the pool broke: the worker takes it from here
                await self.store.retry_job(jobs[0].job_id, f"{e.code} while the sender waited", 0, False, request_id)
                raise
            try:
                await self.store.finish_jobs([res])
            except StorageUnavailable:
                raise
            except Exception as e:  # a poison request: fails alone, retried by the worker with back-off
                log.error("process_failed", request_id=request_id, attempt=jobs[0].attempts, **describe(e))
                await self.worker.fail_or_retry(jobs[0], "internal_error", internal_error_message(request_id))
                raise ProcessingFailed(request_id) from None
        else:  # another worker holds its job: wait for it
            deadline = time.monotonic() + self.settings.write_timeout
            while time.monotonic() < deadline:
                if (await self.store.get_request(request_id)).state != "pending":
                    break
                await asyncio.sleep(0.05)
        row = await self.store.get_request(request_id)
        recs = await self.store.records_for([request_id])
        return receipt(row, recs[request_id])

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention_interval_seconds)
            try:
                await partitions.drop_expired(self.store, self.cache, lock_timeout_ms=self.settings.busy_timeout_ms)
                await purge_expired(self.store, self.cache)
                await prune_relay(self.store, self.settings)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("retention_failed", **describe(e))

    async def _ready(self, send: Send) -> None:
        why = await self.readiness.check()
        if why is None:
            await send_raw(send, 200, b'{"status":"ready"}')
        else:
            await send_json(send, 503, why.body(), {"Retry-After": str(self.settings.retry_after)})

    async def _signed_in(self, scope: Scope) -> bool:
        """An admin or client bearer token, or a console session cookie."""
        for k, v in scope["headers"]:
            if k == b"authorization" and v[:7].lower() == b"bearer ":
                try:
                    await principal_for_token(self.store, self.admin_hash, v[7:].decode("latin-1"))
                    return True
                except Unauthorized:
                    return False
        cookie = SimpleCookie()
        for k, v in scope["headers"]:
            if k == b"cookie":
                with contextlib.suppress(CookieError):
                    cookie.load(v.decode("latin-1"))
        morsel = cookie.get(SESSION_COOKIE)
        return morsel is not None and await self.console.signed_in(morsel.value)

    async def _receipt(self, scope: Scope, send: Send, request_id: str) -> None:
        """Receipt for integrators: the request id is a 128-bit capability; a source with an API
        key also requires that key (or the admin token)."""
        try:
            row = await self.store.get_request(request_id)
        except NotFound:
            await send_raw(send, 404, NOT_FOUND_BODY)
            return
        src = self.cache.by_id.get(row.source_id or "")
        if src is not None and src.api_key_hash is not None and not self._receipt_authorised(scope, src.api_key_hash):
            e = Unauthorized("Missing or invalid API key")
            await send_json(send, e.status, e.to_dict())
            return
        recs = await self.store.records_for([request_id])
        await send_raw(send, 200, orjson.dumps(receipt(row, recs[request_id])))

    def _receipt_authorised(self, scope: Scope, key_hash: str) -> bool:
        from urllib.parse import parse_qsl

        given: list[str] = []
        for k, v in scope["headers"]:
            if k == b"x-api-key":
                given.append(v.decode("latin-1"))
            elif k == b"authorization" and v[:7].lower() == b"bearer ":
                given.append(v[7:].decode("latin-1").strip())
        for k2, v2 in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if k2 == "api-key":
                given.append(v2)
        admin = self.admin_hash.get("hash") or ""
        for g in given:
            h = hash_secret(g)
            if hmac.compare_digest(h, key_hash) or (admin and hmac.compare_digest(h, admin)):
                return True
        return False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    log.exception("startup_failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _bearer_is(scope: Scope, expected: str) -> bool:
    for k, v in scope["headers"]:
        if k == b"authorization" and v[:7].lower() == b"bearer ":
            return hmac.compare_digest(v[7:].strip(), expected.encode("latin-1"))
    return False


def create_app(settings: Settings | None = None) -> HookbayApp:
    from hookbay.settings import get_settings

    return HookbayApp(settings or get_settings())
