#!/usr/bin/env python3
"""Writer micro-benchmark: CPU per stored request row, hookbay's writer against durable-min's.

    .venv/bin/python bench/writer.py [--rows 30000] [--clients 32]

No HTTP: ``--clients`` coroutines each await one durable write after another (as many requests in
flight as wrk's connections would keep waiting on the writer), on a fresh SQLite database in a
temporary directory (or, with ``--database-url``, on that PostgreSQL database). hookbay's writer stores the full request row (21 columns, its indexes) and the
job; durable-min's stores four columns. Prints rows/s, process CPU per row, and average batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BODY = (ROOT / "bench" / "contact.json").read_bytes()


DATABASE_URL = [""]  # --database-url: hookbay's writer on PostgreSQL instead of SQLite


async def hookbay_writer(work: Path, rows: int, clients: int) -> str:
    from hookbay.ids import new_request_id, now_us
    from hookbay.runtime import tune_interpreter
    from hookbay.settings import Settings
    from hookbay.store import open_store

    store = open_store(Settings(data_dir=work, database_url=DATABASE_URL[0]))
    await asyncio.to_thread(store.migrate)
    await store.start()
    tune_interpreter(0.001)
    headers = orjson.dumps([["host", "127.0.0.1"], ["content-type", "application/json"],
                            ["content-length", str(len(BODY))]]).decode()

    def row() -> dict[str, object]:
        return {"id": new_request_id(), "source_id": "src_bench", "client_id": "bench", "received_at": now_us(),
                "method": "POST", "path": "/V1/Data/x", "query": "", "headers": headers, "peer": "127.0.0.1",
                "content_type": "application/json", "body": BODY, "body_size": len(BODY), "verdict": "accepted",
                "rule": None, "status": 200, "state": "pending", "idempotency_key": None, "duplicate_of": None,
                "receipt": None, "processed_at": None, "key_id": None}

    async def client(n: int) -> None:
        for _ in range(n):
            await store.writer.ingest(row(), 10.0)

    try:
        await asyncio.gather(*(client(20) for _ in range(clients)))  # warm-up
        b0 = store.writer.stats.batches
        out = await _timed(lambda: asyncio.gather(*(client(rows // clients) for _ in range(clients))), rows)
        return out + f", batches of {rows / max(1, store.writer.stats.batches - b0):.1f}"
    finally:
        await store.close()


async def durable_min_writer(work: Path, rows: int, clients: int) -> str:
    import bench.durable_min as dm

    sys.setswitchinterval(0.001)
    thread = threading.Thread(target=dm._writer, args=(str(work / "durable-min.db"),), daemon=True)
    thread.start()
    loop = asyncio.get_running_loop()

    async def client(n: int) -> None:
        for _ in range(n):
            fut = loop.create_future()
            dm._q.put((time.time_ns() // 1000, "application/json", BODY, loop, fut))
            await fut

    await asyncio.gather(*(client(20) for _ in range(clients)))
    out = await _timed(lambda: asyncio.gather(*(client(rows // clients) for _ in range(clients))), rows)
    dm._q.put(None)
    thread.join(10)
    return out


async def _timed(run, rows: int) -> str:  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    await run()
    t1, c1 = time.perf_counter(), time.process_time()
    return f"{rows / (t1 - t0):>9,.0f} rows/s, {1e6 * (c1 - c0) / rows:5.1f} µs CPU per row"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--database-url", default="", help="PostgreSQL URL of an empty database for hookbay's writer")
    args = ap.parse_args()
    DATABASE_URL[0] = args.database_url
    uvloop.install()
    for name, fn in (("hookbay writer", hookbay_writer), ("durable-min writer", durable_min_writer)):
        with tempfile.TemporaryDirectory(prefix="hookbay-writer-") as d:
            print(f"{name:>18}: {asyncio.run(fn(Path(d), args.rows, args.clients))}", flush=True)


if __name__ == "__main__":
    main()
