#!/usr/bin/env python3
"""Console page benchmark: server time of the Requests page over a large log.

    .venv/bin/python bench/console.py [--rows 1000000] [--db sqlite|postgresql|both] [--repeat 15]

Fills a fresh database with ``--rows`` requests spread over 30 days (3 sources, 2 clients, 5 %
rejected by the signature rule, ~250-byte JSON bodies each with a unique email and order id), then
logs in to the console in-process (Starlette's TestClient: no network, no browser; the time is the
app's: routing, session check, the store's query and the template) and times each page. SQLite rows
are inserted, then indexed by the text indexer's catch-up (timed apart); PostgreSQL rows are COPY'd,
then the trigram index is built (timed apart). PostgreSQL: ``HOOKBAY_BENCH_PG_URL`` (default the local server).
Prints a Markdown table of median and p95 per page.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN = "bench-admin-token"
WORDS = ["invoice", "signup", "refund", "newsletter", "order", "shipment", "cancel", "upgrade", "trial"]
DAY_MS = 86_400_000
COLS = ["id", "source_id", "client_id", "received_at", "method", "path", "query", "headers", "peer",
        "content_type", "body", "body_size", "verdict", "rule", "status", "state", "idempotency_key",
        "duplicate_of", "receipt", "processed_at", "key_id"]


def rows(n: int, sources: list[tuple[str, str]], now_ms: int) -> Any:
    from hookbay.ids import new_request_id

    rnd = random.Random(7)
    start = now_ms - 30 * DAY_MS
    step = 30 * DAY_MS / n
    for i in range(n):
        ms = int(start + i * step)
        sid, cid = sources[i % len(sources)]
        body = orjson.dumps({"event": rnd.choice(WORDS), "email": f"user{i}@example.com",
                             "order": f"ORD-{i:08d}", "amount": rnd.randint(1, 99999) / 100,
                             "customer": {"name": f"Customer {i % 9973}", "city": rnd.choice(["Oslo", "Lyon", "Kyoto"])},
                             "note": " ".join(rnd.choice(WORDS) for _ in range(6))})
        rejected = i % 20 == 0
        yield (new_request_id(ms), sid, cid, ms * 1000, "POST", "/V1/Data/t", "",
               orjson.dumps([["content-type", "application/json"], ["user-agent", "bench/1.0"],
                             ["x-delivery", f"dlv-{i}"]]).decode(), "203.0.113.7", "application/json",
               body, len(body), "rejected" if rejected else "accepted", "signature" if rejected else None,
               401 if rejected else 200, "rejected" if rejected else "processed", None, None, None, None, None)


def fill(url: str, n: int, sources: list[tuple[str, str]]) -> dict[str, float]:
    import sqlalchemy as sa

    from hookbay.ids import now_us
    from hookbay.store.schema import requests as R
    from hookbay.store.search import TextIndexer

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    now_ms = now_us() // 1000
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)
        batch: list[dict[str, Any]] = []
        with engine.begin() as conn:
            for r in rows(n, sources, now_ms):
                batch.append(dict(zip(COLS, r, strict=True)))
                if len(batch) == 20_000:
                    conn.execute(R.insert(), batch)
                    batch = []
            if batch:
                conn.execute(R.insert(), batch)
        out["insert s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        indexer = TextIndexer(engine)
        indexer.BATCH = 20_000
        indexer.catch_up()
        out["text index (TextIndexer.catch_up) s"] = time.perf_counter() - t1
        engine.dispose()
        return out
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as c:
        expr = c.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_requests_text_trgm'").fetchone()
        c.execute("DROP INDEX ix_requests_text_trgm")
        with c.cursor().copy(f"COPY requests ({', '.join(COLS)}) FROM STDIN") as cp:
            for r in rows(n, sources, now_ms):
                cp.write_row(r)
        c.commit()
        out["COPY s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        c.execute(expr[0])  # type: ignore[index]
        c.execute("ANALYZE requests")
        c.commit()
        out["trigram index build s"] = time.perf_counter() - t1
    return out


def measure(url: str, n: int, repeat: int, data_dir: Path) -> tuple[dict[str, float], list[tuple[str, float, float, int]]]:
    from starlette.testclient import TestClient

    from hookbay.server.app import HookbayApp
    from hookbay.settings import Settings
    from hookbay.store import Store

    store = Store(url)
    store.migrate()
    store.read_engine.dispose()
    store.write_engine.dispose()
    settings = Settings(data_dir=data_dir, database_url=url.replace("+psycopg", ""), admin_token=ADMIN,
                        run_worker="off", log_level="warning")
    app = HookbayApp(settings)
    results = []
    with TestClient(app, base_url="http://127.0.0.1") as client:
        h = {"Authorization": f"Bearer {ADMIN}"}
        made = [client.post("/api/v1/sources", headers=h, json={"name": f"s{i}", "client_id": c}).json()
                for i, c in enumerate(["acme", "acme", "globex"])]
        sources = [(s["id"], s["client_id"]) for s in made]
        fill_times = fill(url, n, sources)
        page = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        client.post("/ui/login", data={"token": ADMIN, "csrf": csrf, "next": "/ui/"}, follow_redirects=False)
        mid = client.get("/api/v1/requests", headers=h, params={"limit": 1, "until": "15d"}).json()["items"][0]["id"]
        rare = f"user{n // 2}@example.com"
        cases = [
            ("newest page", "/ui/"),
            ("one source", f"/ui/?source={sources[0][0]}"),
            ("verdict rejected", "/ui/?verdict=rejected"),
            ("rule + status", "/ui/?rule=signature&status=401"),
            ("last hour", "/ui/?range=1h"),
            ("last 7 days", "/ui/?range=7d"),
            ("deep page (15 days back)", f"/ui/?before={mid}"),
            ("text, one match (email)", f"/ui/?q={rare}"),
            ("text, one match + source", f"/ui/?q={rare}&source={sources[(n // 2) % 3][0]}"),
            ("text, order id prefix (~10 matches)", f"/ui/?q=ORD-{n // 2 // 10:07d}"),
            ("text, common word", "/ui/?q=refund"),
            ("text, common word + last 24 h", "/ui/?q=refund&range=24h"),
            ("live-tail poll (JSON)", "/ui/api/requests?"),
            ("bulk replay count, one source (capped 10,000)", f"/ui/bulk/requests?action=replay&source={sources[0][0]}"),
            ("bulk replay count, last hour", "/ui/bulk/requests?action=replay&range=1h"),
            ("bulk replay count, text one match", f"/ui/bulk/requests?action=replay&q={rare}"),
            ("profiles, name search (no profiles)", "/ui/profiles?q=Ada"),
            ("audit log", "/ui/audit"),
            ("alerts", "/ui/alerts"),
        ]
        for name, path in cases:
            times = []
            status = 0
            count = 0
            for _ in range(repeat):
                t = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                status = r.status_code
                count = r.text.count("<tr data-id=") if "api" not in path else len(r.json()["items"])
                if "/bulk/" in path:
                    found = re.search(r"<strong>(\d+)", r.text)
                    count = int(found.group(1)) if found else 0
            assert status == 200, (name, status)
            times.sort()
            results.append((name, statistics.median(times), times[int(0.95 * (len(times) - 1))], count))
    return fill_times, results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    for db in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        with tempfile.TemporaryDirectory(prefix="hookbay-console-bench-") as tmp:
            name = None
            if db == "sqlite":
                url = f"sqlite:///{tmp}/hookbay.db"
            else:
                import psycopg

                admin = os.environ.get("HOOKBAY_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
                name = "hb_bench_" + secrets.token_hex(4)
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{name}"')
                url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
            try:
                fill_times, results = measure(url, args.rows, args.repeat, Path(tmp))
            finally:
                if name:
                    with psycopg.connect(admin, autocommit=True) as c:
                        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"\n## {db}, {args.rows:,} requests\n")
            print(", ".join(f"{k}: {v:.1f}" for k, v in fill_times.items()))
            print("\n| page | median ms | p95 ms | rows shown |\n|---|---:|---:|---:|")
            for n, med, p95, count in results:
                print(f"| {n} | {med:.1f} | {p95:.1f} | {count} |")


if __name__ == "__main__":
    main()
