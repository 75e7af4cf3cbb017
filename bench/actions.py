#!/usr/bin/env python3
"""Forward-delivery benchmark: how many signed forward deliveries per second one worker process
gets through to a local receiver, on SQLite and on PostgreSQL.

    .venv/bin/python bench/actions.py [--deliveries 5000] [--per-destination 4 32] [--pg-url URL]

N contact records with a forward action are stored with their planned deliveries (the worker's own
`finish_jobs` path), then ONE `Deliverer` (HOOKBAY_DELIVERY_CONCURRENCY=32) drains them against a
receiver running in its own process (uvicorn, answers 204 and counts). Each delivery is a real
HTTP POST with Standard Webhooks headers, one attempt row and one state change. Afterwards the
receiver's count and the delivery states are checked: every delivery succeeded exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from run import free_port, start_server, stop_server  # noqa: E402

RECEIVER = '''
import itertools
count = itertools.count()
seen = [0]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        m = await receive()
        more = m.get("more_body", False)
    if scope["method"] == "GET":
        body = str(seen[0]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    seen[0] = next(count) + 1
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
'''


def receiver_count(url: str) -> int:
    with urllib.request.urlopen(url + "/count", timeout=5) as r:
        return int(r.read())


async def run_one(db_url: str, n: int, per_dest: int, receiver: str) -> dict[str, object]:
    from hookbay.actions.planner import plan
    from hookbay.ids import now_us
    from hookbay.logs import setup_logging
    from hookbay.parsers import contact
    from hookbay.processing.deliverer import Deliverer
    from hookbay.results import ParseReceipt, ProcessResult
    from hookbay.settings import Settings
    from hookbay.store import Store
    from hookbay.store.deliveries import DeliveryFilter
    from hookbay.store.sources import SourceCache

    settings = Settings(database_url=db_url, delivery_concurrency=32, delivery_per_destination=per_dest,
                        log_level="warning")
    setup_logging("warning", True)
    sys.setswitchinterval(settings.gil_switch_interval)  # as `serve` and `worker` do
    store = Store(settings.effective_database_url)
    store.migrate()
    await store.start()
    try:
        row, _ = await store.create_source(name="bench", client_id="bench", config={
            "parser": "contact", "allow_private_destinations": True,
            "actions": [{"type": "forward", "url": receiver + "/hook"}]})
        cache = SourceCache(store, settings.max_body_bytes)
        await cache.reload()
        src = await cache.get_by_id(row.id)
        body = json.loads((BENCH_DIR / "contact.json").read_text())
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            results = []
            for i in range(start, min(n, start + 500)):
                recs = contact.parse([{**body, "Email": f"c{i}@example.com", "Phone": f"+4420794{i:05d}",
                                                "Mobile": f"+447700{i:06d}"}]).records
                results.append(ProcessResult(
                    request_id=f"req_bench{i:08d}", source_id=row.id, client_id="bench", received_at=now_us(),
                    parser="contact", parser_version="1", state="processed", records=recs, receipt=ParseReceipt(),
                    deliveries=plan(recs, src.config.actions, settings)))
            await store.finish_jobs(results)
        preload = time.perf_counter() - t0
        before = receiver_count(receiver)
        d = Deliverer(store, cache, settings)
        t0 = time.perf_counter()
        task = asyncio.create_task(d.run())
        while True:
            counts = await store.delivery_counts()
            if counts.get("succeeded", 0) + counts.get("dead", 0) >= n:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        got = receiver_count(receiver) - before
        dead = await store.list_deliveries(DeliveryFilter(state="dead", limit=5))
        return {"deliveries": n, "per_destination": per_dest, "preload_s": round(preload, 2),
                "drain_s": round(elapsed, 2), "per_s": round(n / elapsed, 1), "succeeded": counts.get("succeeded", 0),
                "dead": counts.get("dead", 0), "receiver_got": got,
                "ok": counts.get("succeeded", 0) == n and got == n,
                "sample_error": dead[0].last_error if dead else None}
    finally:
        await store.close()


def pg_database(base: str) -> tuple[str, str]:
    import psycopg

    name = "hb_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name, name


def drop_pg(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deliveries", type=int, default=5000)
    ap.add_argument("--per-destination", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--pg-url", default=os.environ.get("HOOKBAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--skip-pg", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hookbay-actions-bench-"))
    (work / "receiver_app.py").write_text(RECEIVER)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(work)}
    proc = start_server([sys.executable, "-m", "uvicorn", "receiver_app:app", "--host", "127.0.0.1", "--port", str(port),
                         "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"],
                        env, work / "receiver.log", cwd=work)
    receiver = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            receiver_count(receiver)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    rows = []
    try:
        for per in args.per_destination:
            db = work / f"sqlite-{per}.db"
            rows.append({"backend": "SQLite", **asyncio.run(run_one(f"sqlite:///{db}", args.deliveries, per, receiver))})
            if not args.skip_pg:
                url, name = pg_database(args.pg_url)
                try:
                    rows.append({"backend": "PostgreSQL", **asyncio.run(run_one(url, args.deliveries, per, receiver))})
                finally:
                    drop_pg(args.pg_url, name)
    finally:
        stop_server(proc)
    head = "| backend | per-destination limit | deliveries | deliveries/s | succeeded | receiver got | check |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['per_destination']} | {r['deliveries']:,} | {r['per_s']:,.0f} | "
                     f"{r['succeeded']:,} | {r['receiver_got']:,} | {'ok' if r['ok'] else 'FAILED'} |")
    table = "\n".join(lines)
    print(table)
    ts = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = BENCH_DIR / "results" / f"actions-{ts}.md"
    out.parent.mkdir(exist_ok=True)
    cmd = "python bench/actions.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out.write_text(f"# Forward deliveries, {ts}\n\n`{cmd.strip()}` on {platform.node()} "
                   f"({os.cpu_count()} CPUs, Python {platform.python_version()})\n\n{table}\n\n"
                   f"```json\n{json.dumps(rows, indent=1)}\n```\n")
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
