"""Actions after parsing: which deliveries a record makes, and the loop that runs them.

The worker plans deliveries when it stores records (same transaction, so none is lost or doubled);
the :class:`Deliverer` claims due ones with a lease, runs each action, logs every attempt and
schedules the next one from the action's :class:`~hookbay.actions.retry.RetryPolicy`. Per
destination at most ``delivery_per_destination`` run at once, and a saturated destination's
deliveries are not even claimed, so one slow receiver cannot take every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
import urllib.request
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import structlog

from hookbay import metrics
from hookbay.actions.conditions import Condition, compile_condition
from hookbay.actions.retry import RetryPolicy
from hookbay.actions.ssrf import DestinationRefused, UnresolvedHost, check_destination, is_public_address
from hookbay.ids import now_us
from hookbay.models import Action, EmailAction, ForwardAction, MailchimpAction
from hookbay.settings import Settings
from hookbay.signatures import sign_standard
from hookbay.store import Store, wait_for_wakeup
from hookbay.store.deliveries import AttemptResult, ClaimedDelivery
from hookbay.store.errors import describe
from hookbay.store.sources import ActiveSource, SourceCache

log = structlog.get_logger("hookbay.deliveries")
EXCERPT = 500


@functools.lru_cache(maxsize=1024)
def _condition(text: str) -> Condition:
    return compile_condition(text)


def condition_view(record: dict[str, Any]) -> dict[str, Any]:
    """What a condition sees: a contact record's fields plus its permission flags
    (``EmailPermission`` -> ``email_permission``), or a generic/mapped record's fields."""
    contact = record.get("contact")
    if not isinstance(contact, dict):
        fields = record.get("fields")
        return fields if isinstance(fields, dict) else record
    view = dict(contact)
    for c in record.get("consents") or ():
        if isinstance(c, dict) and isinstance(c.get("field"), str):
            view.setdefault(c["field"], c.get("granted"))
    return view


def destination(action: Action, settings: Settings) -> str:
    """The key per-destination concurrency is counted by."""
    if isinstance(action, ForwardAction):
        u = urlsplit(action.url)
        return f"http:{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
    if isinstance(action, MailchimpAction):
        base = action.base_url or settings.mailchimp_base_url or "mailchimp"
        return f"mailchimp:{urlsplit(base).hostname or base}"
    return f"smtp:{settings.smtp_host or '-'}"


def plan(records: list[dict[str, Any]], src: ActiveSource | None, settings: Settings) -> list[dict[str, Any]]:
    """The deliveries a request's records make: every action whose condition holds, in order."""
    if src is None or not src.config.actions:
        return []
    out = []
    for ri, rec in enumerate(records):
        view = condition_view(rec)
        kind = record_kind(rec)
        for ai, action in enumerate(src.config.actions):
            if kind not in (("contact", "record") if action.on is None else (action.on,)):
                continue
            if action.when is not None and not _condition(action.when).evaluate(view):
                continue
            name = action.name or f"{action.type}-{ai + 1}"
            d = {"record_idx": ri, "action_idx": ai, "action_type": action.type, "action_name": name,
                 "destination": destination(action, settings)[:300]}
            if kind == "order":
                # one delivery per order and action, however many events the order has
                d["once_key"] = f"order:{rec['order']['id']}|{name}"[:300]
            out.append(d)
    return out


def record_kind(rec: dict[str, Any]) -> str:
    return "order" if "order" in rec else "contact" if "contact" in rec else "record"


def _consent(ctx: dict[str, Any]) -> dict[str, bool | None]:
    """Current consent per channel at send time: the profile's ledger, else the record's own flags."""
    profile = ctx.get("profile")
    if profile is not None:
        return dict(profile.get("consent") or {})
    return {c["channel"]: bool(c["granted"]) for c in (ctx["record"].get("consents") or ())
            if isinstance(c, dict) and "channel" in c}


async def _read_excerpt(r: httpx.Response) -> str:
    """The start of the answer only: a destination cannot make the worker hold a huge body."""
    buf = bytearray()
    async for chunk in r.aiter_bytes():
        buf += chunk
        if len(buf) >= EXCERPT * 4:
            break
    return bytes(buf[: EXCERPT * 4]).decode(r.encoding or "utf-8", errors="replace")[:EXCERPT]


def _check_peer(r: httpx.Response, url: str, allow_private: bool) -> None:
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


class Permanent(Exception):
    """The action cannot succeed as configured or with this record; retrying will not help."""


class Outcome:
    """What an executor reports: an HTTP-ish status, a response excerpt, a Retry-After hint."""

    __slots__ = ("excerpt", "retry_after", "skipped", "status")

    def __init__(self, status: int | None = None, excerpt: str | None = None, retry_after: str | None = None,
                 skipped: bool = False) -> None:
        self.status, self.excerpt, self.retry_after, self.skipped = status, excerpt, retry_after, skipped


class Deliverer:
    def __init__(self, store: Store, cache: SourceCache, settings: Settings, http: httpx.AsyncClient | None = None,
                 worker_id: str | None = None) -> None:
        self.store = store
        self.cache = cache
        self.settings = settings
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(follow_redirects=False, timeout=30.0,
                                              headers={"User-Agent": "hookbay"})
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:d{id(self):x}"
        self.default_policy = RetryPolicy(schedule=settings.delivery_schedule_list)
        self.inflight: Counter[str] = Counter()
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finishing: list[tuple[ClaimedDelivery, AttemptResult, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.done = 0

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._own_http:
            await self.http.aclose()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim whenever a quarter of the slots is free (or all are): a claim is a commit, so
        claiming one slot at a time would make the commit, not the destinations, the bottleneck."""
        batch = max(1, self.settings.delivery_concurrency // 4)
        try:
            while True:
                free = self.settings.delivery_concurrency - len(self._tasks)
                n = 0
                if free >= batch or not self._tasks:
                    try:
                        n = await self._claim_and_start()
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        log.warning("delivery_cycle_failed", **describe(e))
                        await asyncio.sleep(self.settings.worker_poll_seconds)
                if n == 0 or n == free:
                    await self._wait()
        finally:
            await self.aclose()

    async def _wait(self) -> None:
        await wait_for_wakeup(self.store.delivery_event, self.settings.worker_poll_seconds)

    def _saturated(self) -> set[str]:
        return {d for d, n in self.inflight.items() if n >= self.settings.delivery_per_destination}

    async def _claim_and_start(self) -> int:
        if self.store.delivery_event is not None:
            self.store.delivery_event.clear()
        free = self.settings.delivery_concurrency - len(self._tasks)
        claimed = await self.store.claim_deliveries(self.worker_id, free, self.settings.delivery_lease_seconds,
                                                    self._saturated())
        if not claimed:
            return 0
        # A lease must only tick while its delivery runs: keep what the destinations' free slots can
        # start now and give the rest back, so nothing waits (and expires) in this process.
        room = {d: self.settings.delivery_per_destination - self.inflight[d] for d in {c.destination for c in claimed}}
        keep: list[ClaimedDelivery] = []
        extra: list[ClaimedDelivery] = []
        for c in claimed:
            (keep if room[c.destination] > 0 else extra).append(c)
            room[c.destination] -= 1
        await self.store.release_deliveries([c.id for c in extra], self.worker_id)
        claimed = keep
        if not claimed:
            return 0
        ctx = await self.store.delivery_context(claimed)
        for c in claimed:
            self.inflight[c.destination] += 1
            t = asyncio.create_task(self._run_one(c, ctx.get(c.id, {})))
            self._tasks.add(t)
            t.add_done_callback(self._task_done)
        return len(claimed)

    def _task_done(self, t: asyncio.Task[None]) -> None:
        self._tasks.discard(t)
        ev = self.store.delivery_event
        if ev is not None:
            ev.set()  # a slot is free: claim again

    async def run_once(self) -> int:
        """Claim one batch and wait for all of it (tests, benchmarks, ``--once`` style use)."""
        n = await self._claim_and_start()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return n

    # --- one delivery ---------------------------------------------------------------------

    async def _run_one(self, c: ClaimedDelivery, ctx: dict[str, Any]) -> None:
        sem = self._sems.setdefault(c.destination, asyncio.Semaphore(self.settings.delivery_per_destination))
        try:
            async with sem:  # held until the outcome is stored: a crash repeats at most this many sends
                result = await self._attempt(c, ctx)
                recorded = await self._finish(c, result)
            if recorded:
                self.done += 1
                metrics.deliveries_total.labels(c.action_type, result.state).inc()
                (log.debug if result.state == "succeeded" else log.info)(
                    "delivery_attempt", delivery_id=c.id, request_id=c.request_id, source_id=c.source_id,
                    action=c.action_type, attempt=c.attempts,
                    state=result.state, status=result.status, error=result.error,
                    latency_ms=round(result.latency_us / 1000, 1))
            else:
                log.warning("delivery_lease_lost", delivery_id=c.id)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # lease expiry brings it back
            log.error("delivery_crashed", delivery_id=c.id, request_id=c.request_id, **describe(e))
        finally:
            self.inflight[c.destination] -= 1
            if self.inflight[c.destination] <= 0:
                del self.inflight[c.destination]

    async def _finish(self, c: ClaimedDelivery, result: AttemptResult) -> bool:
        """Queue the outcome for the next shared write: finishes that arrive while one write is
        committing go together into the following one."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._finishing.append((c, result, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._finishing:
            batch, self._finishing = self._finishing, []
            try:
                done = await self.store.finish_deliveries([(c, self.worker_id, r) for c, r, _ in batch])
            except Exception as e:
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (*_, fut), ok in zip(batch, done, strict=True):
                if not fut.done():
                    fut.set_result(ok)

    async def _attempt(self, c: ClaimedDelivery, ctx: dict[str, Any]) -> AttemptResult:
        started = now_us()
        t0 = time.perf_counter()
        src = await self.cache.get_by_id(c.source_id)
        action: Action | None = None
        if src is not None and 0 <= c.action_idx < len(src.config.actions):
            action = src.config.actions[c.action_idx]
        policy = self.default_policy
        if action is not None and action.retry_schedule:
            policy = RetryPolicy(schedule=tuple(action.retry_schedule))
        status: int | None = None
        error: BaseException | None = None
        out = Outcome()
        try:
            if ctx.get("record") is None:
                raise Permanent("the record is gone (erased or replaced)")
            if src is not None and c.action_idx < 0:
                out = await self._provider(src, c, ctx)
            elif src is None or action is None or action.type != c.action_type:
                raise Permanent("the source or its action was removed or changed since this delivery was planned")
            else:
                out = await self._execute(action, src, c, ctx)
            status = out.status
        except Permanent as e:
            error = e
        except UnresolvedHost as e:
            error = e
        except DestinationRefused as e:
            error = Permanent(str(e))
        except Exception as e:
            error = e
            status = getattr(e, "status_code", None)
            out.retry_after = getattr(e, "retry_after", None)
            out.excerpt = getattr(e, "response_excerpt", None)
        latency = int((time.perf_counter() - t0) * 1e6)
        err_text: str | None = None
        if isinstance(error, Permanent):
            err_text = str(error)[:1000]
        elif error is not None:
            err_text = f"{type(error).__name__}: {error}"[:1000]
        if out.skipped:
            return AttemptResult("skipped", started, latency, "skipped", excerpt=out.excerpt)
        if isinstance(error, Permanent):
            verdict = "fail"
        elif isinstance(error, UnresolvedHost):
            verdict = "retry"
        else:
            verdict = policy.classify(status, error)
        if verdict == "ok":
            return AttemptResult("succeeded", started, latency, "ok", status, out.excerpt)
        if err_text is None:
            err_text = f"HTTP {status}"
        if verdict == "retry":
            delay = policy.next_delay(c.attempts, out.retry_after)
            if delay is not None:
                return AttemptResult("pending", started, latency, "retry", status, out.excerpt, err_text,
                                     run_after=now_us() + int(delay * 1e6))
            err_text = f"retries exhausted after {c.attempts} attempts; last: {err_text}"
        else:
            err_text = f"permanent failure: {err_text}"
        return AttemptResult("dead", started, latency, verdict, status, out.excerpt, err_text[:1000])

    async def _execute(self, action: Action, src: ActiveSource, c: ClaimedDelivery, ctx: dict[str, Any]) -> Outcome:
        if isinstance(action, ForwardAction):
            return await self._forward(action, src, c, ctx)
        if isinstance(action, EmailAction):
            return await self._email(action, src, c, ctx)
        return await self._mailchimp(action, src, ctx)

    async def _forward(self, action: ForwardAction, src: ActiveSource, c: ClaimedDelivery,
                       ctx: dict[str, Any]) -> Outcome:
        await check_destination(action.url, allow_private=src.config.allow_private_destinations)
        if action.body == "raw":
            req = await self.store.get_request(c.request_id)
            if req.get("body") is None:
                raise Permanent("the raw body was purged (retention) or erased")
            body: bytes = req["body"]
            ctype = req.get("content_type") or "application/octet-stream"
        else:
            profile = ctx.get("profile")
            body = orjson.dumps({
                "type": "hookbay.record", "source_id": c.source_id, "request_id": c.request_id,
                "record_index": c.record_idx, "profile_id": profile["id"] if profile else None,
                "data": ctx["record"]})
            ctype = "application/json"
        ts = int(time.time())
        headers = httpx.Headers(action.headers)
        headers.update({"content-type": ctype, "webhook-id": c.id, "webhook-timestamp": str(ts),
                        "webhook-signature": sign_standard(action.secret, c.id, ts, body)})
        async with self.http.stream("POST", action.url, content=body, headers=headers,
                                    timeout=action.timeout_s) as r:
            _check_peer(r, action.url, src.config.allow_private_destinations)
            excerpt = await _read_excerpt(r)
        return Outcome(r.status_code, excerpt, r.headers.get("retry-after"))

    def _template_context(self, src: ActiveSource, c: ClaimedDelivery, ctx: dict[str, Any]) -> dict[str, Any]:
        record = ctx["record"]
        profile = ctx.get("profile") or {}
        out = {"record": record, "contact": condition_view(record), "profile": profile.get("fields", {}),
               "consent": _consent(ctx), "request_id": c.request_id,
               "source": {"id": src.id, "name": src.name, "client_id": src.client_id}}
        if "order" in record:
            from hookbay.orders import order_template

            out["order"] = order_template(record["order"])
            out["lines"] = out["order"]["lines"]
            out["contact"] = profile.get("fields", {})
        return out

    async def _email(self, action: EmailAction, src: ActiveSource, c: ClaimedDelivery, ctx: dict[str, Any]) -> Outcome:
        from hookbay.actions.email import SmtpSettings, TemplateError, render_email, send_email

        s = self.settings
        if not s.smtp_host:
            raise Permanent("email action: HOOKBAY_SMTP_HOST is not configured")
        consent = _consent(ctx)
        if action.is_marketing and consent.get("email") is False:
            return Outcome(skipped=True, excerpt="not sent: the profile's email consent is opt-out")
        context = self._template_context(src, c, ctx)
        try:
            subject, text, html = render_email({"subject": action.subject, "text": action.text,
                                                **({"html": action.html} if action.html else {})}, context)
            to = render_email({"subject": action.to, "text": ""}, context)[0]
        except TemplateError as e:
            raise Permanent(str(e)) from None
        if not to or "@" not in to:
            raise Permanent(f"email action: no recipient address (to renders as {to!r})")
        smtp = SmtpSettings(host=s.smtp_host, port=s.smtp_port, username=s.smtp_username or None,
                            password=s.smtp_password or None, security=s.smtp_security,  # type: ignore[arg-type]
                            timeout=s.smtp_timeout, sender=s.smtp_from)
        try:
            response = await send_email(smtp, to, subject, text, html)
        except ValueError as e:
            raise Permanent(f"email action: {e}") from None
        return Outcome(None, f"{to}: {response}"[:EXCERPT])

    async def _provider(self, src: ActiveSource, c: ClaimedDelivery, ctx: dict[str, Any]) -> Outcome:
        """A push chosen by the contact's ProviderType, through its client's connection."""
        from hookbay.providers import PROVIDER_TYPES
        from hookbay.store.providers import ProviderStore

        name = PROVIDER_TYPES.get(-c.action_idx)
        conn = await ProviderStore(self.store).get(c.client_id, name) if name else None
        if name is None or conn is None:
            raise Permanent(f"provider push: client {c.client_id} has no {name or 'such'} connection any more")
        if name == "mailchimp":
            return await self._mailchimp(MailchimpAction(type="mailchimp", api_key_env=conn["key_env"]), src, ctx)
        return await self._acoustic(conn, src, ctx)

    async def _acoustic(self, conn: dict[str, Any], src: ActiveSource, ctx: dict[str, Any]) -> Outcome:
        from hookbay.actions.acoustic import AcousticClient, AcousticError, Credentials, base_url_for_pod
        from hookbay.containment import secret_env_allowed

        if not secret_env_allowed(conn["key_env"], self.settings):
            raise Permanent(f"acoustic push: {conn['key_env']} is not a provider key variable; not sent")
        try:
            creds = Credentials.parse(os.environ.get(conn["key_env"], ""))
            base = self.settings.acoustic_base_url or base_url_for_pod(conn["pod"] or "")
        except ValueError as e:
            raise Permanent(f"acoustic push: {e} ({conn['key_env']})") from None
        await check_destination(base, allow_private=src.config.allow_private_destinations)
        contact = dict(ctx["record"].get("contact") or {})
        profile_fields = (ctx.get("profile") or {}).get("fields") or {}
        merged = {**{k: v for k, v in profile_fields.items() if v not in (None, "", [])},
                  **{k: v for k, v in contact.items() if v not in (None, "", [])}}
        client = AcousticClient(self.http, creds, base)
        lines = []
        for list_id in [str(x) for x in contact.get("list_ids") or []]:
            try:
                lines.append(await client.push(list_id, merged, _consent(ctx).get("email")))
            except AcousticError as e:
                if e.permanent:
                    raise Permanent(f"acoustic push: {e}") from None
                raise
        return Outcome(200, "; ".join(lines)[:EXCERPT])

    async def _mailchimp(self, action: MailchimpAction, src: ActiveSource, ctx: dict[str, Any]) -> Outcome:
        from hookbay.actions.mailchimp import MailchimpClient, contact_to_member
        from hookbay.containment import secret_env_allowed

        if not secret_env_allowed(action.api_key_env, self.settings):
            raise Permanent(f"mailchimp action: {action.api_key_env} is not a provider key variable (names must "
                            f"start with {self.settings.secret_env_prefix}); not sent")
        key = os.environ.get(action.api_key_env, "")
        if not key:
            raise Permanent(f"mailchimp action: the environment variable {action.api_key_env} is not set")
        record = ctx["record"]
        contact = dict(record.get("contact") or {})
        profile = ctx.get("profile") or {}
        merged = {**{k: v for k, v in (profile.get("fields") or {}).items() if v not in (None, "", [])}, **{
            k: v for k, v in contact.items() if v not in (None, "", [])}}
        list_ids = action.list_ids or [str(x) for x in (contact.get("list_ids") or [])]
        if not list_ids:
            raise Permanent("mailchimp action: no list ids (set list_ids on the action or send ListIds)")
        try:
            member = contact_to_member(merged, _consent(ctx))
            client = MailchimpClient(self.http, key, action.base_url or self.settings.mailchimp_base_url or None)
        except ValueError as e:
            raise Permanent(f"mailchimp action: {e}") from None
        await check_destination(client.base_url, allow_private=src.config.allow_private_destinations)
        excerpts = []
        for list_id in list_ids:
            try:
                res = await client.upsert_member(list_id, **member)
            except ValueError as e:
                raise Permanent(f"mailchimp action: {e}") from None
            excerpts.append(f"{list_id}: {res.status_code} {res.member_id}")
        return Outcome(200, "; ".join(excerpts)[:EXCERPT])
