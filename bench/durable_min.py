"""Durable floor: the least a Python receiver can do and still mean "stored" by its 200.

Raw ASGI (no framework, no token lookup, no header capture beyond the content type), one writer
thread, SQLite in WAL mode with synchronous=FULL, group commit: every request waiting while the
previous commit ran goes into the next one, then all of them are answered. This is not a product;
it is the ceiling for any receiver on this machine that acknowledges only after an fsync, which is
what hookbay promises. It tells how far hookbay's own work (auth, limits, idempotency, request log,
jobs, metrics) is from the cost of durability itself.

    HOOKBAY_DURABLE_MIN_DB=/tmp/x.db uvicorn bench.durable_min:app --loop uvloop --http httptools
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from typing import Any

_BODY = b'{"status":"accepted"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]
_q: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()


def _settle(futs: list[asyncio.Future[None]]) -> None:
    for f in futs:
        if not f.done():
            f.set_result(None)


def _writer(path: str) -> None:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, received_at INTEGER, "
               "content_type TEXT, body BLOB)")
    while True:
        item = _q.get()
        if item is None:
            return
        batch = [item]
        while True:
            try:
                nxt = _q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                _q.put(None)
                break
            batch.append(nxt)
        db.execute("BEGIN")
        db.executemany("INSERT INTO requests (received_at, content_type, body) VALUES (?, ?, ?)",
                       [(t, ct, body) for t, ct, body, _, _ in batch])
        db.execute("COMMIT")
        by_loop: dict[Any, list[Any]] = {}
        for *_, loop, fut in batch:
            by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():
            loop.call_soon_threadsafe(_settle, futs)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                path = os.environ.get("HOOKBAY_DURABLE_MIN_DB", "durable-min.db")
                threading.Thread(target=_writer, args=(path,), daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                _q.put(None)
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"").decode("latin-1")
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    _q.put((time.time_ns() // 1000, ctype, b"".join(chunks), loop, fut))
    await fut
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
