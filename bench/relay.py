#!/usr/bin/env python3
"""Relay benchmark: how fast ONE `hookbay agent` moves queued messages from `hookbay serve` to a
local application, and how long a request takes from ingest to the application when the queue is idle.

    .venv/bin/python bench/relay.py [--messages 5000] [--batch 10 100] [--latency 50]
                                    [--only sqlite|postgresql] [--pg-url postgresql://...]

For each database and batch size:
1. `hookbay serve` (default settings) with one relay source; --messages contact bodies (573 bytes)
   are posted (64 at a time) and the server's own processing of them finishes, so the queue is full
   and nothing else runs;
2. a local receiver (a raw ASGI app on uvicorn, its own process) and `hookbay agent --quiet` start;
   throughput = messages / time from the receiver's first to its last request, and "acked" = until
   the server's queue depth is 0 (every ack stored);
3. with the queue empty and the agent long-polling, --latency requests are sent one at a time and
   the time from the POST to the receiver's arrival is taken (ingest commit -> long-poll wake-up
   -> forward).
Checks: every message arrived exactly once, in queue order. Results go to bench/results/relay-*.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BODY_FILE = BENCH_DIR / "contact.json"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
HOOKBAY = str(VENV_BIN / "hookbay")
HOST = "127.0.0.1"
ADMIN = "bench-admin-" + secrets.token_hex(8)

sys.path.insert(0, str(BENCH_DIR))
from run import free_port, start_server, stop_server, tail, tool_version  # noqa: E402

# ---------------------------------------------------------------- the receiver (its own process)

def receiver_app() -> Any:
    """Raw ASGI: records (arrival time, message id, request id) per request; GET /stats reports."""
    seen: list[tuple[float, int, str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["method"] == "GET":
            mids = [m for _, m, _ in seen]
            body = json.dumps({
                "count": len(seen), "first": seen[0][0] if seen else None, "last": seen[-1][0] if seen else None,
                "unique": len(set(mids)), "in_order": mids == sorted(mids),
                "arrivals": {rid: t for t, _, rid in seen[-1000:]},
            }).encode()
            if scope["path"] == "/reset":
                seen.clear()
        else:
            h = dict(scope["headers"])
            seen.append((time.time(), int(h[b"x-hookbay-message-id"]), h[b"x-hookbay-request-id"].decode()))
            body = b""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def run_receiver(port: int) -> None:
    import uvicorn

    uvicorn.run(receiver_app(), host=HOST, port=port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")


# ---------------------------------------------------------------- one run


@dataclass
class Run:
    backend: str
    batch: int
    messages: int = 0
    ok: bool = False
    error: str = ""
    forwarded_per_s: float = 0.0
    acked_per_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_max_ms: float = 0.0
    delivered: int = 0
    duplicates: int = 0
    in_order: bool = False


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> Any:
    import httpx

    r = httpx.get(url, headers=headers, timeout=timeout)
    r.raise_for_status()
    return r.json()


def _wait(cond: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(every)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


async def _preload(url: str, n: int, body: bytes, concurrency: int = 64) -> None:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one() -> None:
            async with sem:
                r = await c.post(url, content=body, headers={"Content-Type": "application/json"})
                r.raise_for_status()

        await asyncio.gather(*(one() for _ in range(n)))


def bench_one(backend: str, db_url: str, batch: int, args: argparse.Namespace, work: Path) -> Run:
    import httpx

    res = Run(backend, batch)
    port, rport = free_port(), free_port()
    env = dict(os.environ, HOOKBAY_DATA_DIR=str(work), HOOKBAY_PORT=str(port), HOOKBAY_ADMIN_TOKEN=ADMIN,
               HOOKBAY_LOG_LEVEL="warning", HOOKBAY_DATABASE_URL=db_url, PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    base = f"http://{HOST}:{port}"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = start_server([HOOKBAY, "serve"], env, work / "server.log")
        procs.append(server)
        _wait(lambda: _answers(f"{base}/healthz"), 60, "server start")
        src = httpx.post(f"{base}/api/v1/sources", headers=auth, json={
            "name": f"relay-{batch}", "client_id": "bench", "config": {"relay": True}}).json()
        token = httpx.post(f"{base}/api/v1/sources/{src['id']}/relay-tokens", headers=auth,
                           json={"name": "bench"}).json()["token"]
        status_url = f"{base}/api/v1/sources/{src['id']}/relay"
        print(f"  {backend}, batch {batch}: queueing {args.messages} messages ...", flush=True)
        asyncio.run(_preload(src["ingest_url"], args.messages, BODY_FILE.read_bytes()))
        res.messages = _get(status_url, auth)["depth"]
        # let the server finish parsing them, so the agent's run has the machine to itself
        _wait(lambda: b"hookbay_queue_depth 0.0" in httpx.get(f"{base}/metrics").content, 300,
              "processing backlog", every=0.5)

        rcv = start_server([PYTHON, str(Path(__file__).resolve()), "--receiver", str(rport)], env,
                           work / "receiver.log")
        procs.append(rcv)
        rurl = f"http://{HOST}:{rport}"
        _wait(lambda: _answers(f"{rurl}/stats"), 30, "receiver start")
        agent = start_server([HOOKBAY, "agent", "--server", base, "--token", token, "--forward", f"{rurl}/hook",
                              "--batch", str(batch), "--quiet", "--json"], env, work / "agent.log")
        procs.append(agent)
        t_start = time.time()
        _wait(lambda: _get(f"{rurl}/stats")["count"] >= res.messages, 600, "all messages at the receiver", 0.2)
        _wait(lambda: _get(status_url, auth)["depth"] == 0, 120, "all acks stored", 0.05)
        t_acked = time.time()
        st = _get(f"{rurl}/stats")
        res.delivered, res.duplicates, res.in_order = st["count"], st["count"] - st["unique"], st["in_order"]
        span = st["last"] - st["first"]
        res.forwarded_per_s = round((st["count"] - 1) / span, 1) if span > 0 else 0.0
        res.acked_per_s = round(st["count"] / (t_acked - max(t_start, st["first"])), 1)
        print(f"    {res.forwarded_per_s:,.0f} msg/s forwarded, {res.acked_per_s:,.0f} msg/s acked", flush=True)

        # latency, idle queue: one request at a time, spaced out; arrival times are read afterwards
        _get(f"{rurl}/reset")
        sent: dict[str, float] = {}
        with httpx.Client(timeout=10) as c:
            for _ in range(args.latency):
                t0 = time.time()
                rid = c.post(src["ingest_url"], content=b'{"ping": 1}',
                             headers={"Content-Type": "application/json"}).json()["request_id"]
                sent[rid] = t0
                time.sleep(0.1)
        _wait(lambda: _get(f"{rurl}/stats")["count"] >= len(sent), 30, "latency messages", 0.1)
        arrivals = _get(f"{rurl}/stats")["arrivals"]
        lat = sorted((arrivals[rid] - t0) * 1000 for rid, t0 in sent.items() if rid in arrivals)
        if lat:
            res.latency_p50_ms = round(statistics.median(lat), 2)
            res.latency_p95_ms = round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 2)
            res.latency_max_ms = round(lat[-1], 2)
        res.ok = res.delivered == res.messages and res.duplicates == 0 and res.in_order
        if not res.ok:
            res.error = f"delivered {res.delivered}/{res.messages}, {res.duplicates} duplicates, in order {res.in_order}"
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"
        for name in ("server.log", "agent.log", "receiver.log"):
            if (work / name).exists():
                print(f"--- {name}\n{tail(work / name)}", file=sys.stderr)
    finally:
        for p in reversed(procs):
            stop_server(p)
    return res


def pg_database(pg_url: str) -> tuple[str, Any] | None:
    import psycopg

    try:
        admin = psycopg.connect(pg_url, autocommit=True, connect_timeout=5)
    except Exception as e:
        print(f"  PostgreSQL unreachable at {pg_url}: {e}", file=sys.stderr)
        return None
    name = f"hb_relay_{secrets.token_hex(5)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    return name, admin


# ---------------------------------------------------------------- report


def render(ts: str, runs: list[Run], env: dict[str, Any], command: str) -> str:
    rows = ["| database | batch | forwarded msg/s | acked msg/s | idle latency p50 / p95 / max ms | checks |",
            "|---|---:|---:|---:|---:|---|"]
    for r in runs:
        check = ("every message once, in order" if r.ok else f"**FAILED**: {r.error}")
        rows.append(f"| {r.backend} | {r.batch} | {r.forwarded_per_s:,.0f} | {r.acked_per_s:,.0f} | "
                    f"{r.latency_p50_ms:.1f} / {r.latency_p95_ms:.1f} / {r.latency_max_ms:.1f} | {check} |")
    return "\n".join([
        f"# hookbay relay benchmark — {ts}", "",
        f"`{command}`", "",
        f"{env['cpus']} CPUs ({env['cpu_model']}), Python {env['python']}, commit {env['git_commit']}. "
        f"One `hookbay serve` (default settings), one `hookbay agent --quiet`, one receiver (raw ASGI on "
        f"uvicorn), all on this machine; {runs[0].messages if runs else 0} queued messages of 573 bytes per run.",
        "", *rows, "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--batch", type=int, nargs="+", default=[10, 100], help="agent --batch values to run")
    ap.add_argument("--latency", type=int, default=50, help="single requests for the idle-latency figure")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.receiver:
        run_receiver(args.receiver)
        return 0

    ts = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    runs: list[Run] = []
    work_root = Path(tempfile.mkdtemp(prefix="hookbay-relay-bench-"))
    try:
        for backend in ("sqlite", "postgresql"):
            if args.only and backend != args.only:
                continue
            for batch in args.batch:
                work = work_root / f"{backend}-{batch}"
                work.mkdir()
                if backend == "sqlite":
                    runs.append(bench_one("SQLite", "", batch, args, work))
                    continue
                made = pg_database(args.pg_url)
                if made is None:
                    runs.append(Run("PostgreSQL", batch, error="PostgreSQL unreachable"))
                    continue
                name, admin = made
                try:
                    url = args.pg_url.rsplit("/", 1)[0] + "/" + name
                    runs.append(bench_one("PostgreSQL", url, batch, args, work))
                finally:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    admin.close()
    finally:
        shutil.rmtree(work_root, ignore_errors=True)

    env = {
        "cpus": os.cpu_count(),
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                           if ln.startswith("model name")), platform.processor() or "unknown"),
        "python": platform.python_version(),
        "git_commit": tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], "none", check=True),
    }
    command = "python bench/relay.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = render(ts, runs, env, command.strip())
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"relay-{ts}.json").write_text(json.dumps({"ts": ts, "env": env, "command": command,
                                                              "runs": [asdict(r) for r in runs]}, indent=2))
    (RESULTS_DIR / f"relay-{ts}.md").write_text(md)
    (RESULTS_DIR / "relay-latest.md").write_text(md)
    print()
    print(md)
    return 0 if runs and all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
