#!/usr/bin/env python3
"""Console page benchmark: server time of every console list page over a large log.

    .venv/bin/python bench/console.py [--rows 1000000] [--db sqlite|postgresql|both] [--repeat 15]
                                      [--keep DIR] [--out FILE]

Fills a fresh database with ``--rows`` requests spread over 30 days (3 sources, 2 clients, 5 %
rejected by the signature rule, ~250-byte JSON bodies each with a unique email and order id), then
logs in to the console in-process (Starlette's TestClient: no network, no browser; the time is the
app's: routing, session check, the store's query and the template) and times each page. SQLite rows
are inserted, then indexed by the text indexer's catch-up (timed apart); PostgreSQL rows are COPY'd,
then the trigram index is built (timed apart). Beside the requests, one delivery per four requests
and one profile per ten (the Deliveries and Profiles pages). PostgreSQL: ``HOOKBAY_BENCH_PG_URL``
(default the local server).

``--keep DIR`` keeps the filled database for the next run (SQLite in ``DIR/<rows>/``, PostgreSQL as
database ``search_bench_<rows>``; drop it yourself) and reuses it when it is already there, so a
10-million-row log is filled once. Prints, and appends to ``--out`` (default
``bench/results/console-YYYYMMDD.md``), a Markdown table of p50 and p95 per page with the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
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
DCOLS = ["id", "request_id", "record_idx", "action_idx", "source_id", "client_id", "action_type", "action_name",
         "destination", "state", "attempts", "run_after", "last_status", "last_error", "created_at", "updated_at"]
PCOLS = ["id", "client_id", "email", "phone", "fields", "created_at", "updated_at"]
KCOLS = ["client_id", "kind", "value", "profile_id"]
DSTATES = ["succeeded"] * 16 + ["failed", "dead", "pending", "skipped"]


def rows(n: int, sources: list[tuple[str, str]], now_ms: int) -> Any:
    """Requests, and beside every fourth a delivery and every tenth a profile (kind, row)."""
    from hookbay.ids import new_request_id, ulid

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
        rid = new_request_id(ms)
        yield "r", (rid, sid, cid, ms * 1000, "POST", "/V1/Data/t", "",
                    orjson.dumps([["content-type", "application/json"], ["user-agent", "bench/1.0"],
                                  ["x-delivery", f"dlv-{i}"]]).decode(), "203.0.113.7", "application/json",
                    body, len(body), "rejected" if rejected else "accepted", "signature" if rejected else None,
                    401 if rejected else 200, "rejected" if rejected else "processed", None, None, None, None, None)
        if i % 4 == 1:
            state = DSTATES[(i // 4) % len(DSTATES)]
            bad = state in ("failed", "dead")
            yield "d", ("dlv_" + ulid(ms), rid, 0, 0, sid, cid, "webhook", "crm",
                        f"https://hooks{i % 7}.example.net/in", state, 1 + bad * 4, ms * 1000,
                        503 if bad else 200, "HTTP 503 from destination" if bad else None, ms * 1000, ms * 1000)
        if i % 10 == 3:
            pid = "prf_" + ulid(ms)
            yield "p", (pid, cid, f"user{i}@example.com", None, "{}", ms * 1000, ms * 1000)
            yield "k", (cid, "email", f"user{i}@example.com", pid)


def fill(url: str, n: int, sources: list[tuple[str, str]]) -> dict[str, float]:
    import sqlalchemy as sa

    from hookbay.ids import now_us
    from hookbay.store import schema
    from hookbay.store.search import TextIndexer, pg_index_all

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    now_ms = now_us() // 1000
    tables = {"r": (schema.requests, COLS), "d": (schema.deliveries, DCOLS), "p": (schema.profiles, PCOLS),
              "k": (schema.profile_keys, KCOLS)}
    if url.startswith("sqlite"):
        # the app's own text indexer runs meanwhile: wait for its small transactions
        engine = sa.create_engine(url, connect_args={"timeout": 600})
        batches: dict[str, list[dict[str, Any]]] = {k: [] for k in tables}
        with engine.begin() as conn:
            for kind, r in rows(n, sources, now_ms):
                batch = batches[kind]
                batch.append(dict(zip(tables[kind][1], r, strict=True)))
                if len(batch) == 20_000:
                    conn.execute(tables[kind][0].insert(), batch)
                    batch.clear()
            for kind, batch in batches.items():
                if batch:
                    conn.execute(tables[kind][0].insert(), batch)
        out["insert s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        indexer = TextIndexer(engine)
        indexer.BATCH = 20_000
        indexer.catch_up()
        out["text index (TextIndexer.catch_up) s"] = time.perf_counter() - t1
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
        engine.dispose()
        return out
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as c:
        cur = c.cursor()
        copies = {kind: cur.connection.cursor().copy(f"COPY {t.name} ({', '.join(cols)}) FROM STDIN")
                  for kind, (t, cols) in tables.items()}
        # one COPY at a time per connection: buffer the small tables, stream the requests
        small: dict[str, list[tuple[Any, ...]]] = {k: [] for k in tables if k != "r"}
        with copies.pop("r") as cp:
            for kind, r in rows(n, sources, now_ms):
                if kind == "r":
                    cp.write_row(r)
                else:
                    small[kind].append(r)
        for kind, cp2 in copies.items():
            with cp2 as cp:
                for r in small[kind]:
                    cp.write_row(r)
        c.commit()
        out["COPY s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    eng = sa.create_engine(url)
    with eng.begin() as conn:  # what the text indexer would do over time, at once
        pg_index_all(conn)
    eng.dispose()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ANALYZE")
    out["trigram index (request_text) s"] = time.perf_counter() - t1
    return out


def cases(n: int, sources: list[tuple[str, str]], mid: str, deep: str) -> list[tuple[str, str]]:
    rare = f"user{n // 2}@example.com"
    s0 = sources[0][0]
    return [
        ("requests: newest page", "/ui/"),
        ("requests: one source", f"/ui/?source={s0}"),
        ("requests: verdict rejected", "/ui/?verdict=rejected"),
        ("requests: rule + status", "/ui/?rule=signature&status=401"),
        ("requests: last hour", "/ui/?range=1h"),
        ("requests: last 7 days", "/ui/?range=7d"),
        ("requests: deep page (cursor 15 days back)", f"/ui/?before={mid}"),
        ("requests: deep page (cursor 29 days back)", f"/ui/?before={deep}"),
        ("text: one match (an email)", f"/ui/?q={rare}"),
        ("text: one match + source", f"/ui/?q={rare}&source={sources[(n // 2) % 3][0]}"),
        ("text: one match + rejected", f"/ui/?q={rare}&verdict=rejected"),
        ("text: order-id prefix (~10 matches)", f"/ui/?q=ORD-{n // 2 // 10:07d}"),
        ("text: order id, exact", f"/ui/?q=ORD-{n // 3:08d}"),
        ("text: a common word", "/ui/?q=refund"),
        ("text: a common word, deep page", f"/ui/?q=refund&before={mid}"),
        ("text: a common word + last 24 h", "/ui/?q=refund&range=24h"),
        ("text: a common word + rejected", "/ui/?q=refund&verdict=rejected"),
        ("text: a word in every row (header)", "/ui/?q=bench/1.0"),
        ("text: a header value", f"/ui/?q=dlv-{n // 2}%22"),
        ("text: no match", "/ui/?q=zzqx-nothing"),
        ("text: no match + source", f"/ui/?q=zzqx-nothing&source={s0}"),
        ("live-tail poll (JSON)", "/ui/api/requests?"),
        ("live-tail poll, text (JSON)", "/ui/api/requests?q=refund"),
        ("deliveries: newest page", "/ui/deliveries"),
        ("deliveries: dead", "/ui/deliveries?state=dead"),
        ("deliveries: error text", "/ui/deliveries?error=503"),
        ("deliveries: destination + source", f"/ui/deliveries?destination=hooks3&source={s0}"),
        ("profiles: newest page", "/ui/profiles"),
        ("profiles: by email", f"/ui/profiles?q=user{(n // 2) // 10 * 10 + 3}@example.com"),
        ("profiles: name search", "/ui/profiles?q=Ada"),
        ("sources", "/ui/sources"),
        ("bulk replay count, one source (capped 10,000)", f"/ui/bulk/requests?action=replay&source={s0}"),
        ("bulk replay count, last hour", "/ui/bulk/requests?action=replay&range=1h"),
        ("bulk replay count, text one match", f"/ui/bulk/requests?action=replay&q={rare}"),
        ("audit log", "/ui/audit"),
        ("alerts", "/ui/alerts"),
    ]


def measure(url: str, n: int, repeat: int, data_dir: Path) -> tuple[dict[str, float], list[tuple[str, float, float, int]]]:
    import sqlalchemy as sa
    from starlette.testclient import TestClient

    from hookbay.server.app import HookbayApp
    from hookbay.settings import Settings
    from hookbay.store import Store

    store = Store(url)
    store.migrate()
    store.read_engine.dispose()
    store.write_engine.dispose()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        have = int(conn.exec_driver_sql("SELECT count(*) FROM requests").scalar() or 0)
    engine.dispose()
    settings = Settings(data_dir=data_dir, database_url=url.replace("+psycopg", ""), admin_token=ADMIN,
                        run_worker="off", log_level="warning")
    app = HookbayApp(settings)
    results = []
    fill_times: dict[str, float] = {}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        h = {"Authorization": f"Bearer {ADMIN}"}
        if have:
            made = sorted(client.get("/api/v1/sources", headers=h).json(), key=lambda s: s["name"])
            if have != n or len(made) != 3:
                raise SystemExit(f"{url}: holds {have:,} requests and {len(made)} sources, not {n:,} and 3")
            fill_times["reused, filled before"] = 0
        else:
            made = [client.post("/api/v1/sources", headers=h, json={"name": f"s{i}", "client_id": c}).json()
                    for i, c in enumerate(["acme", "acme", "globex"])]
        sources = [(s["id"], s["client_id"]) for s in made]
        if not have:
            fill_times = fill(url, n, sources)
        page = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        client.post("/ui/login", data={"token": ADMIN, "csrf": csrf, "next": "/ui/"}, follow_redirects=False)
        mid = client.get("/api/v1/requests", headers=h, params={"limit": 1, "until": "15d"}).json()["items"][0]["id"]
        deep = client.get("/api/v1/requests", headers=h, params={"limit": 1, "until": "29d"}).json()["items"][0]["id"]
        for name, path in cases(n, sources, mid, deep):
            times = []
            status = 0
            count = 0
            for _ in range(repeat):
                t = time.perf_counter()
                r = client.get(path)
                times.append((time.perf_counter() - t) * 1000)
                status = r.status_code
                count = len(r.json()["items"]) if "/api/" in path else r.text.count("<tr")
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
    ap.add_argument("--keep", type=Path, help="keep (and reuse) the filled databases; SQLite under this directory")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "bench" / "results" / f"console-{dt.datetime.now(dt.UTC):%Y%m%d}.md")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    import psycopg

    admin = os.environ.get("HOOKBAY_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    for db in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        with tempfile.TemporaryDirectory(prefix="hookbay-console-bench-") as tmp:
            data_dir = Path(tmp)
            name = None
            if db == "sqlite":
                if args.keep:
                    data_dir = args.keep / f"sqlite-{args.rows}"
                    data_dir.mkdir(parents=True, exist_ok=True)
                url = f"sqlite:///{data_dir}/hookbay.db"
            else:
                name = f"search_bench_{args.rows}" if args.keep else f"search_bench_tmp_{os.getpid()}"
                with psycopg.connect(admin, autocommit=True) as c:
                    if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                        c.execute(f'CREATE DATABASE "{name}"')
                url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
            load_before = os.getloadavg()
            try:
                fill_times, results = measure(url, args.rows, args.repeat, data_dir)
            finally:
                if name and not args.keep:
                    with psycopg.connect(admin, autocommit=True) as c:
                        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            load_after = os.getloadavg()
            lines = [f"\n## {db}, {args.rows:,} requests, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n",
                     "load average (1/5/15 min) before: " + " / ".join(f"{x:.2f}" for x in load_before)
                     + ", after: " + " / ".join(f"{x:.2f}" for x in load_after) + f"; {args.repeat} runs per page",
                     "", ", ".join(f"{k}: {v:.1f}" for k, v in fill_times.items()),
                     "", "| page | p50 ms | p95 ms | table rows |", "|---|---:|---:|---:|"]
            lines += [f"| {n} | {med:.1f} | {p95:.1f} | {count} |" for n, med, p95, count in results]
            text = "\n".join(lines) + "\n"
            print(text)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(text)


if __name__ == "__main__":
    main()
