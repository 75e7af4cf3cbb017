#!/usr/bin/env python3
"""Processing benchmark: how fast one worker turns contact requests into profiles, and how long an
acknowledged request waits for its profile while `hookbay serve` takes a steady stream.

    .venv/bin/python bench/processing.py [--records 20000] [--rate 1000] [--duration 20]
                                         [--only throughput|lag] [--pg-url postgresql://...]

1. throughput: N contact requests are pre-loaded (worker not running), then ONE Worker drains the
   queue (`Worker.drain`, pipelined as in `serve`, until the jobs table is empty), on SQLite and on PostgreSQL. Target: >= 3,000
   contact records/s.
2. lag: `hookbay serve` (SQLite, in-process worker, default settings) gets a constant --rate req/s
   from wrk for --duration s; afterwards processed_at - received_at of every accepted request gives
   p50/p95/p99/max. Target: p95 < 1 s.

See bench/README.md ("Processing benchmark").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402  (bench/ is not a package; the ingest benchmark's helpers are shared)
    TargetFailed,
    _base_env,
    _ingest_url_from,
    _ms,
    free_port,
    http,
    start_server,
    stop_server,
    tail,
    tool_version,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BODY_FILE = BENCH_DIR / "contact.json"
VENV_BIN = ROOT / ".venv" / "bin"
HOOKBAY = str(VENV_BIN / "hookbay")
HOST = "127.0.0.1"

if str(ROOT) not in sys.path:  # `python bench/processing.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

THROUGHPUT_TARGET = 3000.0  # contact records/s, one worker
LAG_P95_LIMIT_MS = 1000.0
WORKER_BATCH = 200
INGEST_CONCURRENCY = 500


# ---------------------------------------------------------------- data model


@dataclass
class Throughput:
    backend: str  # "SQLite" | "PostgreSQL"
    ok: bool = False
    error: str = ""
    requests: int = 0
    distinct_emails: int = 0
    preload_s: float | None = None
    drain_s: float | None = None
    records_per_s: float | None = None
    batches: int = 0
    sql_statements: int | None = None
    batch_s: list[float] = field(default_factory=list)  # time between one batch's results being stored and the next's
    # time spent in each store call and in parsing (load + parse); they overlap, as the worker pipelines
    phase_s: dict[str, float] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    profiles: int | None = None
    records: int | None = None
    records_without_profile: int | None = None
    jobs_left: int | None = None
    verify_errors: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.ok and not self.verify_errors


@dataclass
class Lag:
    ok: bool = False
    error: str = ""
    url: str = ""
    target_rate: float = 0.0
    duration_s: float = 0.0
    connections: int = 0
    threads: int = 0
    paced_by: str = ""  # "clock" (LuaJIT ffi clock_gettime schedule) or "fixed" delay
    wrk_cmd: str = ""
    wrk_requests: int | None = None
    wrk_seconds: float | None = None
    achieved_rate: float | None = None
    wrk_p50_ms: float | None = None
    wrk_p99_ms: float | None = None
    responses: int | None = None
    acked_2xx: int | None = None
    non_2xx: int | None = None
    socket_errors: dict[str, int] = field(default_factory=dict)
    drain_after_load_s: float | None = None
    accepted: int | None = None
    processed: int | None = None
    with_profile: int | None = None
    profiles: int | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    verify_errors: list[str] = field(default_factory=list)
    server_env: dict[str, str] = field(default_factory=dict)
    server_exit_code: int | None = None
    wrk_output: str = ""
    server_log_tail: str = ""

    @property
    def verified(self) -> bool:
        return self.ok and not self.verify_errors


BenchFailed = TargetFailed


# ---------------------------------------------------------------- helpers






def wait_until_answers(proc: subprocess.Popen, url: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchFailed(f"server exited with code {proc.returncode}: {tail(log, 1).strip()}")
        try:
            status = http("GET", url, timeout=1.0)
            if status == 200:
                return
            last = f"GET {urlsplit(url).path} -> {status}"
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    raise BenchFailed(f"server did not answer within {timeout:.0f}s ({last})")












def percentile(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]




def contact_body(template: dict[str, Any], customer: int, variant: int) -> bytes:
    """bench/contact.json for customer #customer: its own email and phone numbers, so customers
    never share an identity key (profiles match on email, else phone)."""
    import orjson

    body = dict(template)
    body["Email"] = f"user{customer}@example.com"
    body["FirstName"] = f"Ada{variant}"
    body["Phone"] = f"+44 20 7{customer % 10_000_000:07d}"
    body["Mobile"] = f"+44 77{customer % 100_000_000:08d}"
    return orjson.dumps(body)


# ---------------------------------------------------------------- 1. throughput


async def _throughput(url: str, work: Path, n: int, res: Throughput) -> None:
    import orjson
    import sqlalchemy as sa

    from hookbay.ids import new_request_id, now_us
    from hookbay.processing.worker import Worker
    from hookbay.runtime import tune_interpreter
    from hookbay.settings import Settings
    from hookbay.store import Store, schema
    from hookbay.store.sources import SourceCache

    template = orjson.loads(BODY_FILE.read_bytes())
    bodies = [contact_body(template, i // 2, i) for i in range(n)]
    res.requests = n
    res.distinct_emails = len({f"user{i // 2}@example.com" for i in range(n)})

    store = Store(url)
    await asyncio.to_thread(store.migrate)
    await store.start()
    try:
        src, _ = await store.create_source(name="bench", client_id="bench", config={"parser": "contact"})
        has_key_id = "key_id" in schema.requests.c
        path = f"/V1/Data/{src.token}"
        headers = orjson.dumps([["host", "127.0.0.1"], ["content-type", "application/json"]]).decode()

        def row(body: bytes) -> dict[str, Any]:
            r = {
                "id": new_request_id(), "source_id": src.id, "client_id": "bench", "received_at": now_us(),
                "method": "POST", "path": path, "query": "", "headers": headers, "peer": HOST,
                "content_type": "application/json", "body": body, "body_size": len(body),
                "verdict": "accepted", "rule": None, "status": 200, "state": "pending",
                "idempotency_key": None, "duplicate_of": None, "receipt": None, "processed_at": None,
            }  # fmt: skip
            if has_key_id:
                r["key_id"] = None
            return r

        t0 = time.perf_counter()
        for i in range(0, n, INGEST_CONCURRENCY):
            await asyncio.gather(*(store.writer.ingest(row(b)) for b in bodies[i : i + INGEST_CONCURRENCY]))
        res.preload_s = time.perf_counter() - t0
        depth = await store.queue_depth()
        if depth != n:
            raise BenchFailed(f"pre-load left {depth} jobs, expected {n}")

        settings = Settings(data_dir=work, database_url=url, worker_batch=WORKER_BATCH, worker_yield_ratio=0,
                            log_level="warning")
        cache = SourceCache(store, 1 << 20)
        await cache.reload()
        worker = Worker(store, cache, settings, worker_id="bench-worker")
        tune_interpreter(settings.gil_switch_interval)  # as `hookbay worker` does

        # Time each store call the worker awaits (instance attributes shadow the methods).
        phase = {"claim_jobs": 0.0, "load_requests": 0.0, "finish_jobs": 0.0, "load_and_parse": 0.0}
        stored_at: list[float] = []
        for obj, name in ((store, "claim_jobs"), (store, "load_requests"), (store, "finish_jobs"),
                          (worker, "_prepare")):
            orig = getattr(obj, name)
            key = "load_and_parse" if name == "_prepare" else name

            def timed(*a: Any, _orig: Any = orig, _key: str = key, **kw: Any) -> Any:
                async def go() -> Any:
                    s = time.perf_counter()
                    try:
                        return await _orig(*a, **kw)
                    finally:
                        phase[_key] += time.perf_counter() - s
                        if _key == "finish_jobs":
                            stored_at.append(time.perf_counter())

                return go()

            setattr(obj, name, timed)

        stmts = 0

        def count_stmt(*_a: Any, **_kw: Any) -> None:
            nonlocal stmts
            stmts += 1

        sa.event.listen(store.write_engine, "before_cursor_execute", count_stmt)
        t0 = time.perf_counter()
        last_progress = t0
        while True:
            got = await worker.drain()
            if got:
                last_progress = time.perf_counter()
                continue
            if await store.queue_depth() == 0:
                break
            if time.perf_counter() - last_progress > 60:  # jobs stuck in retry back-off
                raise BenchFailed(f"queue not drained: {await store.queue_depth()} jobs left after 60 s idle")
            await asyncio.sleep(0.05)
        res.drain_s = time.perf_counter() - t0
        sa.event.remove(store.write_engine, "before_cursor_execute", count_stmt)
        res.sql_statements = stmts
        for name in ("claim_jobs", "load_requests", "finish_jobs"):
            delattr(store, name)
        del worker._prepare
        res.batches = len(stored_at)
        res.batch_s = [round(b - a, 4) for a, b in zip([t0, *stored_at], stored_at, strict=False)]
        res.records_per_s = n / res.drain_s
        res.phase_s = {k: round(v, 3) for k, v in phase.items()}

        def verify(conn: sa.Connection) -> dict[str, Any]:
            q = lambda s: conn.execute(sa.text(s))  # noqa: E731
            return {
                "states": {r[0]: int(r[1]) for r in q("SELECT state, count(*) FROM requests GROUP BY state")},
                "profiles": int(q("SELECT count(*) FROM profiles").scalar() or 0),
                "records": int(q("SELECT count(*) FROM records").scalar() or 0),
                "no_profile": int(q("SELECT count(*) FROM records WHERE profile_id IS NULL").scalar() or 0),
                "jobs": int(q("SELECT count(*) FROM jobs").scalar() or 0),
            }

        v = await store.read(verify)
        res.states, res.profiles, res.records = v["states"], v["profiles"], v["records"]
        res.records_without_profile, res.jobs_left = v["no_profile"], v["jobs"]
        errs = res.verify_errors
        if res.states != {"processed": n}:
            errs.append(f"request states {res.states}, expected all {n} 'processed'")
        if res.profiles != res.distinct_emails:
            errs.append(f"{res.profiles} profiles, expected {res.distinct_emails} (distinct emails)")
        if res.records != n or res.records_without_profile:
            errs.append(f"{res.records} records ({res.records_without_profile} without profile), expected {n}")
        if res.jobs_left:
            errs.append(f"{res.jobs_left} jobs left")
        res.ok = True
    finally:
        await store.close()


def bench_throughput_sqlite(args: argparse.Namespace, work: Path) -> Throughput:
    res = Throughput("SQLite")
    d = work / "sqlite"
    d.mkdir()
    try:
        asyncio.run(_throughput(f"sqlite:///{(d / 'hookbay.db').resolve()}", d, args.records, res))
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


def bench_throughput_pg(args: argparse.Namespace, work: Path) -> Throughput:
    import psycopg
    import sqlalchemy as sa

    res = Throughput("PostgreSQL")
    d = work / "pg"
    d.mkdir()
    name = f"hb_bench_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(args.pg_url, autocommit=True, connect_timeout=5)
    except Exception as e:
        res.error = f"cannot connect to {args.pg_url}: {type(e).__name__}: {e}"
        return res
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(args.pg_url).set(drivername="postgresql+psycopg", database=name)
        try:
            asyncio.run(_throughput(url.render_as_string(hide_password=False), d, args.records, res))
        except Exception as e:
            res.error = f"{type(e).__name__}: {e}"
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as e:
            print(f"    warning: could not drop database {name}: {e}", file=sys.stderr)
        admin.close()
    return res


# ---------------------------------------------------------------- 2. lag

# Each wrk thread has its own Lua state. delay() paces the thread's connections on a shared
# schedule (slot k at t0 + k*period, period = threads*1000/rate ms) read from CLOCK_MONOTONIC
# through LuaJIT's ffi, so the offered rate stays constant whatever the response time (a slot that
# is already late is sent at once). Without ffi it falls back to a fixed per-connection delay of
# connections_per_thread*1000/rate_per_thread ms. request() makes every body unique (email, phone).
LAG_LUA = r"""
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

local now_ms = nil
local ok, ffi = pcall(require, "ffi")
if ok then
   ok = pcall(ffi.cdef, [[
      typedef struct { long tv_sec; long tv_nsec; } hb_timespec;
      int clock_gettime(int clk_id, hb_timespec *tp);
   ]])
   if ok then
      local ts = ffi.new("hb_timespec")
      now_ms = function()
         ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
         return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
      end
   end
end

function init(args)
   responses, acked_2xx, counter, slot = 0, 0, 0, 0
   local f = assert(io.open(args[1], "rb"), "cannot open body template " .. args[1])
   template = f:read("*a")
   f:close()
   local rate = tonumber(args[2])            -- requests/s for the whole run
   local nthreads = tonumber(args[3])
   local conns = tonumber(args[4])           -- connections per thread
   period = nthreads * 1000.0 / rate         -- ms between requests of this thread
   fixed_delay = math.floor(conns * period + 0.5)
   paced_by = now_ms and "clock" or "fixed"
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function delay()
   if not now_ms then
      return fixed_delay
   end
   local t = now_ms()
   if t0 == nil then
      t0 = t
   end
   local due = t0 + slot * period
   slot = slot + 1
   if due <= t then
      return 0
   end
   return math.floor(due - t + 0.5)
end

function request()
   counter = counter + 1
   local k = (tid or 1) * 10000000 + counter
   local body = string.format(template, "lag" .. k .. "@example.com",
                              string.format("+44 20 7%07d", k % 10000000),
                              string.format("+44 77%08d", k % 100000000))
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   responses = responses + 1
   if status >= 200 and status < 300 then
      acked_2xx = acked_2xx + 1
   end
end

function done(summary, latency, requests)
   local total, acked, paced = 0, 0, "?"
   for _, t in ipairs(threads) do
      total = total + (t:get("responses") or 0)
      acked = acked + (t:get("acked_2xx") or 0)
      paced = t:get("paced_by") or paced
   end
   io.write(string.format("BENCH_COUNTS responses=%d acked_2xx=%d non_2xx=%d paced_by=%s\n",
                          total, acked, total - acked, paced))
end
"""




def _cli(cmd: list[str], env: dict[str, str], timeout: float = 120) -> str:
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchFailed(f"`{' '.join(cmd[1:3])}` failed: {e}") from e
    if p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise BenchFailed(f"`hookbay {' '.join(cmd[1:3])}` exited {p.returncode}: {msg[-1] if msg else ''}"[:300])
    return p.stdout


def _parse_wrk(out: str, res: Lag) -> None:
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out, re.M)
    if m:
        res.wrk_requests = int(m.group(1))
        res.wrk_seconds = _ms(m.group(2) + m.group(3)) / 1000.0
    m = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    if m:
        res.achieved_rate = float(m.group(1))
    for pct, attr in (("50", "wrk_p50_ms"), ("99", "wrk_p99_ms")):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+(?:us|ms|s|m|h))\s*$", out, re.M)
        if m:
            setattr(res, attr, _ms(m.group(1)))
    res.socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res.socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    m = re.search(r"BENCH_COUNTS responses=(\d+) acked_2xx=(\d+) non_2xx=(\d+) paced_by=(\w+|\?)", out)
    if m:
        res.responses, res.acked_2xx, res.non_2xx = map(int, m.groups()[:3])
        res.paced_by = m.group(4)


def _sqlite_scalar(db: Path, sql: str) -> Any:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def bench_lag(args: argparse.Namespace, work: Path) -> Lag:
    res = Lag(target_rate=args.rate, duration_s=args.duration, connections=args.connections, threads=1)
    try:
        _lag(args, work, res)
        res.ok = True
    except BenchFailed as e:
        res.error = str(e)
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


def _lag(args: argparse.Namespace, work: Path, res: Lag) -> None:
    import orjson

    if not shutil.which("wrk"):
        raise BenchFailed("wrk not installed (apt-get install -y wrk)")
    if not Path(HOOKBAY).exists():
        raise BenchFailed(f"{HOOKBAY} missing (run `pip install -e .`)")
    data_dir = work / "lag-data"
    data_dir.mkdir()
    db = data_dir / "hookbay.db"
    port = free_port()
    env = _base_env()
    env.pop("HOOKBAY_DATABASE_URL", None)
    env.pop("HOOKBAY_PUBLIC_URL", None)
    env.update(HOOKBAY_DATA_DIR=str(data_dir), HOOKBAY_PORT=str(port), HOOKBAY_HOST=HOST,
               HOOKBAY_LOG_LEVEL="warning")
    res.server_env = {k: v for k, v in env.items() if k.startswith("HOOKBAY_") and k != "HOOKBAY_DATA_DIR"}

    _cli([HOOKBAY, "migrate"], env)  # only serve and migrate create a database
    out = _cli([HOOKBAY, "source", "create", "--name", "lag", "--client", "bench", "--parser", "contact",
                "--json"], env)
    res.url = f"http://{HOST}:{port}{urlsplit(_ingest_url_from(out)).path}"

    # Body template for string.format: Email, Phone, Mobile become %s.
    tpl = orjson.loads(BODY_FILE.read_bytes())
    tpl.update(Email="\x00E", Phone="\x00P", Mobile="\x00M")
    text = orjson.dumps(tpl).decode().replace("%", "%%")
    for mark in ("\x00E", "\x00P", "\x00M"):
        text = text.replace(json.dumps(mark), '"%s"')
    (work / "lag-body.tpl").write_text(text)
    (work / "lag.lua").write_text(LAG_LUA)

    log = work / "hookbay-serve.log"
    proc = start_server([HOOKBAY, "serve"], env, log)
    try:
        wait_until_answers(proc, f"http://{HOST}:{port}/healthz", log)
        smoke = contact_body(orjson.loads(BODY_FILE.read_bytes()), 99_999_999, 0)
        status = http("POST", res.url, smoke, timeout=10.0)
        if not 200 <= status < 300:
            raise BenchFailed(f"smoke POST answered {status}")

        cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
               "-s", str(work / "lag.lua"), res.url, "--",
               str(work / "lag-body.tpl"), f"{args.rate:g}", "1", str(args.connections)]  # fmt: skip
        res.wrk_cmd = " ".join(c if not c.startswith(str(work)) else Path(c).name for c in cmd)
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 60)
        load_end = time.monotonic()
        res.wrk_output = p.stdout + (("\n[stderr]\n" + p.stderr) if p.stderr.strip() else "")
        if p.returncode != 0:
            raise BenchFailed(f"wrk exited {p.returncode}: {p.stderr.strip()[:300]}")
        _parse_wrk(p.stdout, res)
        if res.achieved_rate is None:
            raise BenchFailed("could not parse wrk output")

        deadline = load_end + max(120.0, args.duration * 5.0)
        while True:
            left = _sqlite_scalar(db, "SELECT count(*) FROM jobs")
            if left == 0:
                break
            if proc.poll() is not None:
                raise BenchFailed(f"server exited with code {proc.returncode} while {left} jobs were queued")
            if time.monotonic() > deadline:
                raise BenchFailed(f"{left} jobs still queued {deadline - load_end:.0f} s after the load ended")
            time.sleep(0.1)
        res.drain_after_load_s = time.monotonic() - load_end
    finally:
        res.server_exit_code = stop_server(proc)
        res.server_log_tail = tail(log)

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT r.state, r.processed_at - r.received_at,"
            " EXISTS (SELECT 1 FROM records c WHERE c.request_id = r.id AND c.profile_id IS NOT NULL)"
            " FROM requests r WHERE r.verdict = 'accepted'").fetchall()
        res.profiles = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
    finally:
        con.close()
    res.accepted = len(rows)
    res.processed = sum(1 for r in rows if r[0] == "processed")
    res.with_profile = sum(1 for r in rows if r[2])
    lags = sorted(r[1] / 1000.0 for r in rows if r[1] is not None)
    if lags:
        res.p50_ms, res.p95_ms, res.p99_ms = (percentile(lags, p) for p in (50, 95, 99))
        res.max_ms, res.mean_ms = lags[-1], sum(lags) / len(lags)
    acked = (res.acked_2xx or 0) + 1  # + the smoke POST
    errs = res.verify_errors
    if res.accepted < acked:
        errs.append(f"{acked - res.accepted} acknowledged requests missing ({res.accepted} stored, {acked} acked)")
    if res.processed != res.accepted:
        errs.append(f"{res.accepted - res.processed} accepted requests not 'processed'")
    if res.with_profile != res.accepted:
        errs.append(f"{res.accepted - res.with_profile} accepted requests without a profile")
    if res.profiles != res.accepted:
        errs.append(f"{res.profiles} profiles for {res.accepted} unique emails")
    if res.non_2xx or sum(res.socket_errors.values()):
        errs.append(f"{res.non_2xx} non-2xx responses, socket errors {res.socket_errors}")


# ---------------------------------------------------------------- report




def _status(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "FAIL")


def _oneline(s: str) -> str:
    return " ".join(s.split()).replace("|", "\\|")[:200]


def table(tps: list[Throughput], lag: Lag | None, args: argparse.Namespace) -> str:
    lines = [
        "| measurement | database | load | result | verified | target | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in tps:
        meas = f"contact records/s, one worker (batch {WORKER_BATCH})"
        load = f"{args.records:,} queued requests, {t.distinct_emails:,} customers"
        if not t.ok:
            lines.append(f"| {meas} | {t.backend} | {load} | FAILED: {_oneline(t.error)} | — "
                         f"| ≥ {THROUGHPUT_TARGET:,.0f}/s | **N/A** |")
            continue
        result = (f"**{_f(t.records_per_s)} records/s** ({t.requests:,} in {t.drain_s:.2f} s; "
                  f"{t.profiles:,} profiles created)")
        ver = "all processed, profiles = emails" if not t.verify_errors else "FAIL: " + "; ".join(t.verify_errors)
        st = _status(t.records_per_s is not None and t.records_per_s >= THROUGHPUT_TARGET)
        lines.append(f"| {meas} | {t.backend} | {load} | {result} | {_oneline(ver)} "
                     f"| ≥ {THROUGHPUT_TARGET:,.0f}/s | **{st}** |")
    if lag is not None:
        meas = "ack-to-profile lag (`hookbay serve`, in-process worker)"
        load = (f"{lag.target_rate:,.0f} req/s × {lag.duration_s:g} s offered, "
                f"{_f(lag.achieved_rate)} req/s achieved")
        if not lag.ok:
            lines.append(f"| {meas} | SQLite | {load} | FAILED: {_oneline(lag.error)} | — "
                         f"| p95 < {LAG_P95_LIMIT_MS:,.0f} ms | **N/A** |")
        else:
            result = (f"p50 {_f(lag.p50_ms, '{:,.1f}')} / **p95 {_f(lag.p95_ms, '{:,.1f}')}** / "
                      f"p99 {_f(lag.p99_ms, '{:,.1f}')} / max {_f(lag.max_ms, '{:,.1f}')} ms "
                      f"({lag.accepted:,} requests)")
            ver = ("all acked stored, processed, with profile" if not lag.verify_errors
                   else "FAIL: " + "; ".join(lag.verify_errors))
            st = _status(lag.p95_ms is not None and lag.p95_ms < LAG_P95_LIMIT_MS)
            lines.append(f"| {meas} | SQLite | {load} | {result} | {_oneline(ver)} "
                         f"| p95 < {LAG_P95_LIMIT_MS:,.0f} ms | **{st}** |")
    return "\n".join(lines)


def check_rows(tps: list[Throughput], lag: Lag | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in tps:
        v = t.records_per_s if t.ok else None
        out.append({"check": f"{t.backend}: one worker ≥ {THROUGHPUT_TARGET:,.0f} contact records/s",
                    "value": None if v is None else round(v, 1),
                    "status": "N/A" if v is None else _status(v >= THROUGHPUT_TARGET)})
        out.append({"check": f"{t.backend}: every request processed, profiles = distinct emails",
                    "value": "; ".join(t.verify_errors) or (f"{t.profiles} profiles" if t.ok else None),
                    "status": "N/A" if not t.ok else _status(not t.verify_errors)})
    if lag is not None:
        v = lag.p95_ms if lag.ok else None
        out.append({"check": f"lag at {lag.target_rate:,.0f} req/s: p95 < {LAG_P95_LIMIT_MS:,.0f} ms",
                    "value": None if v is None else round(v, 1),
                    "status": "N/A" if v is None else _status(v < LAG_P95_LIMIT_MS)})
        out.append({"check": "lag: every acked request stored, processed and with a profile",
                    "value": "; ".join(lag.verify_errors) or (f"{lag.accepted} requests" if lag.ok else None),
                    "status": "N/A" if not lag.ok else _status(not lag.verify_errors)})
    return out


def details(tps: list[Throughput], lag: Lag | None) -> list[str]:
    out = []
    for t in tps:
        if t.ok:
            ph = ", ".join(f"{k} {v:.2f} s" for k, v in t.phase_s.items())
            out.append(f"- {t.backend} throughput: pre-load {t.requests:,} requests in {t.preload_s:.2f} s "
                       f"({t.requests / t.preload_s:,.0f}/s); drain {t.drain_s:.2f} s in {t.batches} batches, "
                       f"{t.sql_statements:,} SQL statements on the write connection "
                       f"({t.sql_statements / t.requests:.1f} per record) — time in {ph} (overlapping)"
                       + _first_last(t))
    if lag is not None and lag.ok:
        out.append(f"- lag: wrk sent {lag.wrk_requests:,} requests in {lag.wrk_seconds:.2f} s "
                   f"({_f(lag.achieved_rate, '{:,.1f}')} req/s; paced by {lag.paced_by}), ack latency "
                   f"p50 {_f(lag.wrk_p50_ms, '{:.2f}')} ms / p99 {_f(lag.wrk_p99_ms, '{:.2f}')} ms; "
                   f"{lag.acked_2xx:,} acked 2xx, {lag.non_2xx} non-2xx, socket errors "
                   f"{sum(lag.socket_errors.values())}; mean lag {_f(lag.mean_ms, '{:.1f}')} ms; queue empty "
                   f"{lag.drain_after_load_s:.2f} s after the load ended")
    return out


def _f(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "—" if v is None else fmt.format(v)


def _first_last(t: Throughput) -> str:
    """records/s over the first and the last tenth of the batches (does it slow down as tables grow?)."""
    k = len(t.batch_s) // 10
    if k < 1:
        return ""
    first, last = sum(t.batch_s[:k]), sum(t.batch_s[-k:])
    return (f"; first {k} batches {k * WORKER_BATCH / first:,.0f} records/s, "
            f"last {k} {k * WORKER_BATCH / last:,.0f} records/s")




def environment() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": tool_version([sys.executable, "--version"]),
        "wrk": tool_version(["wrk", "--version"]).split(" Copyright")[0],
        "git_commit": tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], "none", check=True),
    }


def render_markdown(ts: str, command: str, env: dict[str, Any], tbl: str, checks: list[dict[str, Any]],
                    det: list[str], lag: Lag | None, tps: list[Throughput]) -> str:
    parts = [
        f"# hookbay processing benchmark — {ts}",
        "",
        f"Command: `{command}`",
        "",
        tbl,
        "",
        "| check | value | result |",
        "|---|---|---|",
        *[f"| {c['check']} | {'—' if c['value'] is None else _oneline(str(c['value']))} | **{c['status']}** |"
          for c in checks],
        "",
        *det,
    ]
    if lag is not None and lag.wrk_cmd:
        parts += ["", f"Load: `{lag.wrk_cmd}` (template = bench/contact.json with a unique Email, Phone and "
                      f"Mobile per request); server env: "
                      + ", ".join(f"{k}={v}" for k, v in sorted(lag.server_env.items()))]
    parts += ["", "Environment: " + ", ".join(f"{k}: {v}" for k, v in env.items())]
    failed = [t for t in tps if not t.ok] + ([lag] if lag is not None and not lag.ok else [])
    if failed:
        parts += ["", "## Failures", ""]
        for f in failed:
            parts += [f"- {getattr(f, 'backend', 'lag')}: {f.error}"]
            if isinstance(f, Lag) and f.server_log_tail:
                parts += ["", "```", f.server_log_tail, "```"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000, help="contact requests to pre-load (default 20000)")
    ap.add_argument("--rate", type=float, default=1000.0, help="lag: offered requests/s (default 1000)")
    ap.add_argument("--duration", type=int, default=20, help="lag: seconds of load (default 20)")
    ap.add_argument("--connections", type=int, default=20, help="lag: wrk connections, one thread (default 20)")
    ap.add_argument("--only", choices=["throughput", "lag"], help="run just one of the two measurements")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="PostgreSQL admin URL used to create and drop a scratch database hb_bench_<hex>")
    ap.add_argument("--no-pg", action="store_true", help="throughput on SQLite only")
    ap.add_argument("--keep-data", action="store_true", help="keep the temp dir (databases, server log)")
    ap.add_argument("--no-save", action="store_true", help="print only; do not write bench/results/")
    args = ap.parse_args(argv)
    if args.records < 1 or args.rate <= 0 or args.duration < 1 or args.connections < 1:
        ap.error("--records, --rate, --duration and --connections must be positive")

    command = ".venv/bin/python bench/processing.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="processing-", suffix=".tmp", dir=RESULTS_DIR))
    started = datetime.now(UTC)
    tps: list[Throughput] = []
    lag: Lag | None = None
    try:
        if args.only in (None, "throughput"):
            runners = [bench_throughput_sqlite] + ([] if args.no_pg else [bench_throughput_pg])
            for run in runners:
                name = "SQLite" if run is bench_throughput_sqlite else "PostgreSQL"
                print(f"==> throughput on {name}: {args.records:,} contact requests ...", file=sys.stderr, flush=True)
                t = run(args, work)
                tps.append(t)
                if t.ok:
                    print(f"    {t.records_per_s:,.0f} records/s, {t.profiles:,} profiles"
                          + (f"; VERIFY FAILED: {'; '.join(t.verify_errors)}" if t.verify_errors else ""),
                          file=sys.stderr)
                else:
                    print(f"    FAILED: {t.error}", file=sys.stderr)
        if args.only in (None, "lag"):
            print(f"==> lag: {args.rate:,.0f} req/s for {args.duration} s ...", file=sys.stderr, flush=True)
            lag = bench_lag(args, work)
            if lag.ok:
                print(f"    p95 {lag.p95_ms:,.1f} ms at {lag.achieved_rate:,.0f} req/s", file=sys.stderr)
            else:
                print(f"    FAILED: {lag.error}", file=sys.stderr)
                if lag.server_log_tail:
                    print("    " + lag.server_log_tail.replace("\n", "\n    "), file=sys.stderr)
    finally:
        if args.keep_data:
            print(f"data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    tbl = table(tps, lag, args)
    checks = check_rows(tps, lag)
    det = details(tps, lag)
    env = environment()
    print()
    print(f"Command: {command}")
    print()
    print(tbl)
    print()
    for c in checks:
        print(f"{c['status']:4}  {c['check']}" + ("" if c["value"] is None else f"  ({c['value']})"))
    if det:
        print()
        print("\n".join(det))
    if lag is not None and lag.wrk_cmd:
        print(f"- load: {lag.wrk_cmd}")

    if not args.no_save:
        ts = started.strftime("%Y%m%dT%H%M%SZ")
        md = render_markdown(started.strftime("%Y-%m-%d %H:%M:%S UTC"), command, env, tbl, checks, det, lag, tps)
        payload = {
            "started_utc": started.isoformat(),
            "command": command,
            "args": vars(args),
            "environment": env,
            "throughput": [asdict(t) for t in tps],
            "lag": None if lag is None else asdict(lag),
            "checks": checks,
        }
        (RESULTS_DIR / f"processing-{ts}.md").write_text(md)
        (RESULTS_DIR / f"processing-{ts}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS_DIR / "processing-latest.md").write_text(md)
        print(f"\nwrote bench/results/processing-{ts}.md, bench/results/processing-{ts}.json, "
              "bench/results/processing-latest.md", file=sys.stderr)
    return 0 if checks and all(c["status"] == "PASS" for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
