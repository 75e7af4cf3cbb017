"""``hookbay agent``: drains a relay source's queue into a local application behind a firewall.

It only makes outbound requests: it long-polls the hookbay server with a relay token, and forwards
each leased request (original method, headers and body; the original query string appended to the
``--forward`` URL) to the local application, strictly in arrival order:

* 2xx from the application: the message is acked. Acks travel while the next messages are
  forwarded (one request at a time, carrying every ack queued meanwhile), are retried until the
  server takes them, and all of a batch's acks land before the next pull. An ack stays valid after the lease expired as long as nobody re-leased the message, so a
  server that restarts, or is unreachable for longer than the lease, causes no second delivery.
* anything else (or no answer): the message is nacked with an exponential back-off delay (with
  jitter, capped), which also gives back the rest of the batch; the server then holds the queue
  until the delay has passed, so later messages never overtake it.
* the server unreachable: reconnect with back-off; a pull whose answer was lost is retried with
  the same lease id, which returns the same messages at once.
* killed (even ``kill -9``): the acks it owed are in its journal (``agent_journal.py``) and are
  sent on start, before anything else; its first pull names the dead run's last lease, so the
  messages it held come back at once instead of after the lease expires.

Exactly-once holds with one agent per source, except for the one message an agent is killed
while forwarding (sent again, marked ``X-Hookbay-Possible-Duplicate``); with several agents, a
message whose lease expires while its agent is still forwarding it can reach the application twice.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from hookbay import __version__ as VERSION
from hookbay.relay.journal import Journal, JournalLocked
from hookbay.runtime import tune_interpreter

try:  # httpcore looks for sniffio on every asyncio request; without it each lookup is a failed import
    import sniffio  # noqa: F401
except ImportError:  # ... which searches sys.path every time. Mark it absent once (a fast ImportError).
    sys.modules["sniffio"] = None  # type: ignore[assignment]

# Not forwarded: hop-by-hop headers (RFC 9110 7.6.1), and what the new connection sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
})

EXIT_OK, EXIT_FORWARD_FAILED, EXIT_SERVER_UNREACHABLE, EXIT_TOKEN_REJECTED, EXIT_JOURNAL_LOCKED = 0, 1, 2, 3, 4
ONCE_ATTEMPTS = 6  # --once: give up on an unreachable server after this many tries in a row


class TokenRejected(Exception):
    pass


class ServerUnreachable(Exception):
    pass


@dataclass
class AgentConfig:
    server: str
    token: str
    forward: str
    once: bool = False
    wait: float = 30.0
    batch: int = 10
    visibility: float = 60.0
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    forward_timeout: float = 30.0
    journal: Path | None = None


@dataclass
class AgentStats:
    forwarded: int = 0
    failed: int = 0
    ack_lost: int = 0
    started: float = field(default_factory=time.monotonic)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential, capped, with jitter in the upper half (so it never collapses to zero)."""
    d = min(cap, base * 2.0 ** max(0, attempt - 1))
    return d / 2 + random.uniform(0, d / 2)


def forward_url(base: str, query: str) -> str:
    if not query:
        return base
    parts = urlsplit(base)
    q = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, q, parts.fragment))


def forward_headers(message: dict[str, Any], possible_duplicate: bool = False) -> list[tuple[bytes, bytes]]:
    pairs: list[list[str]] = message.get("headers") or []
    drop = set(HOP_BY_HOP)
    for k, v in pairs:
        if k.lower() == "connection":  # headers the sender named as hop-by-hop
            drop.update(t.strip().lower() for t in v.split(",") if t.strip())
    out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs if k.lower() not in drop]
    out.append((b"X-Hookbay-Message-Id", str(message["id"]).encode()))
    out.append((b"X-Hookbay-Request-Id", message["request_id"].encode()))
    if message.get("body_b64") is None:
        out.append((b"X-Hookbay-Body-Missing", b"1"))
    if possible_duplicate:
        out.append((b"X-Hookbay-Possible-Duplicate", b"1"))
    return out


class Agent:
    def __init__(self, cfg: AgentConfig, emit: Callable[[dict[str, Any]], None]) -> None:
        self.cfg = cfg
        self.emit = emit
        self.stats = AgentStats()
        self.failures = 0  # consecutive failed forwards
        self._stopping = False
        self._pulling: asyncio.Task[Any] | None = None
        self._unacked: list[dict[str, Any]] = []  # forwarded, ack not sent yet
        self._acking: asyncio.Task[None] | None = None
        self.journal = Journal(cfg.journal) if cfg.journal is not None else None
        self._resume_lease: str | None = None  # the killed run's last lease: the first pull names it
        self._in_doubt: int | None = None  # the killed run may have forwarded it: sent again, marked
        self.server = httpx.AsyncClient(
            base_url=cfg.server.rstrip("/"),
            headers={"Authorization": f"Bearer {cfg.token}", "User-Agent": f"hookbay-agent/{VERSION}"},
            timeout=httpx.Timeout(15.0, read=cfg.wait + 15.0),
        )
        # The local application: no proxy from the environment, no redirects followed. Forwards are
        # strictly one at a time, so they use the blocking client on one thread of their own: it
        # costs about half the CPU of the asyncio client per request, which is most of the agent's work.
        self.local = httpx.Client(timeout=cfg.forward_timeout, follow_redirects=False, trust_env=False)
        self._forwarder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hookbay-forward")

    def stop(self) -> None:
        if self._stopping:  # a second signal: do not wait for the server any longer
            self.emit({"event": "stopped", "forced": True, "forwarded": self.stats.forwarded})
            os._exit(130)
        self._stopping = True
        if self._pulling is not None:
            self._pulling.cancel()

    async def close(self) -> None:
        await self.server.aclose()
        self._forwarder.shutdown(wait=True)
        self.local.close()
        if self.journal is not None:
            self.journal.close()

    async def _recover(self) -> None:
        """Send the acks a killed run owed, before pulling anything."""
        assert self.journal is not None
        rec = self.journal.open()
        self._resume_lease, self._in_doubt = rec.lease_id, rec.in_doubt
        for mid, lid in sorted(rec.owed.items()):
            self._ack_later({"id": mid, "lease_id": lid})
        await self._acks_sent()
        if rec.owed or rec.in_doubt is not None:
            self.emit({"event": "journal_replayed", "acks": len(rec.owed), "in_doubt": rec.in_doubt,
                       "lease_id": rec.lease_id})

    async def run(self) -> int:
        # The forward thread and the event loop hand the GIL back and forth per message.
        tune_interpreter(0.001)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        self.emit({"event": "started", "server": self.cfg.server, "forward": self.cfg.forward,
                   "once": self.cfg.once})
        code = EXIT_OK
        try:
            if self.journal is not None:
                await self._recover()
            while not self._stopping:
                self._pulling = asyncio.create_task(self._pull())
                try:
                    messages = await self._pulling
                except asyncio.CancelledError:
                    if self._stopping:
                        break
                    raise
                finally:
                    self._pulling = None
                if not messages:
                    if self.cfg.once:
                        break
                    continue
                ok = await self._deliver(messages)
                if not ok and self.cfg.once:
                    code = EXIT_FORWARD_FAILED
                    break
        except TokenRejected:
            self.emit({"event": "token_rejected", "message": "the server refused the relay token (revoked?)"})
            code = EXIT_TOKEN_REJECTED
        except ServerUnreachable as e:
            self.emit({"event": "gave_up", "message": str(e)})
            code = EXIT_SERVER_UNREACHABLE
        except JournalLocked as e:
            self.emit({"event": "journal_locked", "message": str(e)})
            code = EXIT_JOURNAL_LOCKED
        finally:
            await self.close()
        self.emit({"event": "stopped", "forwarded": self.stats.forwarded, "failed": self.stats.failed,
                   "ack_lost": self.stats.ack_lost, "exit_code": code,
                   "seconds": round(time.monotonic() - self.stats.started, 3)})
        return code

    # --- the server -----------------------------------------------------------------------

    async def _call(self, what: str, method: str, url: str, **kw: Any) -> httpx.Response:
        """One server call, retried on network errors and 5xx with back-off; 401 is fatal. Other
        answers are returned to the caller."""
        attempt = 0
        while True:
            try:
                r = await self.server.request(method, url, **kw)
            except httpx.HTTPError as e:
                err = f"{type(e).__name__}: {e}".rstrip(": ")
            else:
                if r.status_code == 401:
                    raise TokenRejected()
                if r.status_code < 500:
                    if attempt:
                        self.emit({"event": "reconnected", "after_attempts": attempt})
                    return r
                err = f"HTTP {r.status_code}"
            attempt += 1
            if self.cfg.once and attempt >= ONCE_ATTEMPTS:
                raise ServerUnreachable(f"{what}: {err}")
            delay = backoff(attempt, 0.5, self.cfg.max_backoff)
            if attempt == 1 or attempt % 10 == 0:
                self.emit({"event": "server_unreachable", "during": what, "error": err, "attempt": attempt,
                           "retry_in_s": round(delay, 2)})
            await asyncio.sleep(delay)

    async def _pull(self) -> list[dict[str, Any]]:
        # reused by retries (a lost answer is returned again), and journaled for a restarted agent
        lease_hint, self._resume_lease = self._resume_lease or "agt_" + secrets.token_hex(10), None
        if self.journal is not None:
            self.journal.pulling(lease_hint)
        params = {"wait": 0 if self.cfg.once else self.cfg.wait, "max": self.cfg.batch,
                  "visibility": self.cfg.visibility, "lease_id": lease_hint}
        while True:
            r = await self._call("pull", "GET", "/api/v1/relay/messages", params=params)
            if r.status_code == 200:
                return list(r.json()["messages"])
            self.emit({"event": "server_error", "during": "pull", "status": r.status_code, "body": r.text[:300]})
            if self.cfg.once:
                raise ServerUnreachable(f"pull: HTTP {r.status_code}")
            await asyncio.sleep(backoff(1, self.cfg.min_backoff, self.cfg.max_backoff))

    def _ack_later(self, m: dict[str, Any]) -> None:
        """Queue an ack. One ack request is in flight at a time, carrying every ack queued while the
        previous one travelled (as the server's group commit does for writes)."""
        self._unacked.append(m)
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._send_acks())

    async def _acks_sent(self) -> None:
        if self._acking is not None:
            await self._acking

    async def _send_acks(self) -> None:
        while self._unacked:
            batch, self._unacked = self._unacked, []
            r = await self._call("ack", "POST", "/api/v1/relay/messages/ack",
                                 json={"messages": [{"id": m["id"], "lease_id": m["lease_id"]} for m in batch]})
            states = ({x["id"]: x["state"] for x in r.json()["results"]} if r.status_code == 200
                      else {m["id"]: f"HTTP {r.status_code}" for m in batch})
            if self.journal is not None:  # answered: retrying would not change it
                self.journal.acked([m["id"] for m in batch])
            for m in batch:
                st = states.get(m["id"], "missing")
                if st not in ("acked", "already_acked"):
                    # the lease was taken over (another agent, after it expired): it may be delivered again
                    self.stats.ack_lost += 1
                    self.emit({"event": "ack_refused", "message_id": m["id"], "state": st})

    async def _nack(self, m: dict[str, Any], delay: float, error: str) -> None:
        r = await self._call("nack", "POST", f"/api/v1/relay/messages/{m['id']}/nack",
                             json={"lease_id": m["lease_id"], "delay_s": round(delay, 3), "error": error[:2000]})
        if r.status_code != 200:
            self.emit({"event": "nack_refused", "message_id": m["id"], "status": r.status_code})

    # --- the local application ------------------------------------------------------------

    async def _deliver(self, messages: list[dict[str, Any]]) -> bool:
        """Forward a leased batch in order. Returns False if a forward failed (the rest went back)."""
        try:
            for i, m in enumerate(messages):
                if self._stopping:
                    await self._acks_sent()
                    await self._nack(m, 0, "agent stopping")
                    return True
                if self.journal is not None:
                    self.journal.forwarding(m["id"], m["lease_id"])
                t0 = time.perf_counter()
                ok, status, error, retry_after = await self._forward(m)
                ms = round((time.perf_counter() - t0) * 1000, 2)
                if self.journal is not None and ok:
                    self.journal.forwarded(m["id"], m["lease_id"])
                elif self.journal is not None:
                    self.journal.failed(m["id"])
                if ok:
                    self.failures = 0
                    self.stats.forwarded += 1
                    self._ack_later(m)
                    self.emit({"event": "forwarded", "message_id": m["id"], "request_id": m["request_id"],
                               "status": status, "ms": ms})
                    continue
                self.failures += 1
                self.stats.failed += 1
                delay = 0.0 if self.cfg.once else backoff(self.failures, self.cfg.min_backoff, self.cfg.max_backoff)
                if retry_after is not None and not self.cfg.once:
                    delay = max(delay, min(retry_after, self.cfg.max_backoff))
                await self._acks_sent()
                await self._nack(m, delay, error or "")
                self.emit({"event": "forward_failed", "message_id": m["id"], "request_id": m["request_id"],
                           "status": status, "error": error, "retry_in_s": round(delay, 2),
                           "returned": len(messages) - i})
                return False
            return True
        finally:
            if self.journal is not None:
                self.journal.sync()
            await self._acks_sent()  # every ack stored before the next pull: exactly once across restarts

    async def _forward(self, m: dict[str, Any]) -> tuple[bool, int | None, str | None, float | None]:
        body = base64.b64decode(m["body_b64"]) if m.get("body_b64") is not None else b""
        doubt = m["id"] == self._in_doubt
        req = httpx.Request(m["method"], forward_url(self.cfg.forward, m.get("query") or ""),
                            headers=forward_headers(m, doubt), content=body)
        try:
            r = await asyncio.get_running_loop().run_in_executor(self._forwarder, self.local.send, req)
        except httpx.HTTPError as e:
            return False, None, f"{type(e).__name__}: {e}".rstrip(": "), None
        if 200 <= r.status_code < 300:
            return True, r.status_code, None, None
        ra = r.headers.get("retry-after", "")
        return False, r.status_code, f"HTTP {r.status_code}: {r.text[:200]}", float(ra) if ra.isdigit() else None


async def run_agent(cfg: AgentConfig, emit: Callable[[dict[str, Any]], None]) -> int:
    return await Agent(cfg, emit).run()
