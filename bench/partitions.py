"""The request log on PostgreSQL, unpartitioned vs partitioned by day (issue #17): N generated
requests (default 10 million, small bodies, spread over --days days, 20 sources of 4 clients),
then the console/API search path (``Store.search_requests``), the tail (newest 50), a receipt by
id, and retention of one day: DROP of its partition vs row deletes and body purges.

    .venv/bin/python bench/partitions.py [--rows 10000000] [--days 30] [--out bench/results/partitions-YYYYMMDD.md]

Each layout gets its own database ``partitions_bench_flat`` / ``partitions_bench_part`` on the
local PostgreSQL (``--pg``), dropped at the end unless ``--keep``. Rows are generated in SQL and
the secondary indexes built after loading, as a restore would. Figures are medians (and p95) of
``--repeat`` runs after a warm-up; the load average is recorded with them (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hookbay.store import RequestFilter, Store, schema  # noqa: E402
from hookbay.store import partitions as P  # noqa: E402
from hookbay.store.search import PG_EXPR, pg_index_all  # noqa: E402

DAY = 86_400_000_000
SOURCES = [(f"src_bench{i:02d}", f"client{i % 4}") for i in range(20)]

_B32 = """
CREATE OR REPLACE FUNCTION bench_b32(ms bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT string_agg(substr('0123456789abcdefghjkmnpqrstvwxyz', ((ms >> (45 - 5 * i)) & 31)::int + 1, 1), ''
                    ORDER BY i) FROM generate_series(0, 9) AS i
$$"""


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def alembic(url: str, target: str) -> None:
    eng = sa.create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(P.__file__).resolve().parent.parent / "migrations"))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
    eng.dispose()


def build(admin: str, layout: str, rows: int, days: int, now: int, reuse: bool) -> str:
    name = f"partitions_bench_{layout}"
    url = admin.rsplit("/", 1)[0] + "/" + name
    if reuse:
        try:
            with psycopg.connect(url) as c:
                row = c.execute("SELECT count(*) FROM requests").fetchone()
            if row and row[0] >= rows - 2 * rows // days:
                log(f"{layout}: reusing {name} ({row[0]} rows)")
                return url
        except psycopg.OperationalError:
            pass
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    t0 = time.perf_counter()
    if layout == "part":
        alembic(sa_url, "head")  # a new database: partitioned by 0011
    else:
        alembic(sa_url, "0010")
    with psycopg.connect(url, autocommit=True) as c:
        eng = sa.create_engine(sa_url)
        if layout == "part":
            with eng.connect() as conn, conn.begin():
                P.ensure(conn, "day", 7, now, oldest=now - days * DAY)
        for ix in [*P.index_names(), "ix_requests_text_trgm"]:  # the latter: 0010's, on the flat layout
            c.execute(f"DROP INDEX IF EXISTS {ix}")
        c.execute(_B32)
        span = days * DAY
        step = 1_000_000
        for lo in range(0, rows, step):
            hi = min(rows, lo + step)
            # g from the oldest: received_at rises with g, the id's time prefix with it
            c.execute(
                "INSERT INTO requests (id, source_id, client_id, received_at, method, path, query, headers, peer,"
                " content_type, body, body_size, verdict, status, state, processed_at) "
                "SELECT 'req_' || bench_b32(t / 1000) || substr(md5(g::text), 1, 26), s.id, s.client, t, 'POST',"
                " '/V1/Data/x', '', '[[\"content-type\",\"application/json\"],[\"user-agent\",\"bench\"]]',"
                " '10.0.0.' || (g %% 250), 'application/json',"
                " convert_to('{\"email\":\"user' || g || '@example.com\",\"n\":' || g || '}', 'UTF8'), 40,"
                " CASE WHEN g %% 50 = 0 THEN 'rejected' ELSE 'accepted' END, CASE WHEN g %% 50 = 0 THEN 401 ELSE 200"
                " END, CASE WHEN g %% 50 = 0 THEN 'rejected' ELSE 'processed' END, t "
                "FROM (SELECT g, %(now)s - %(span)s + floor(g::numeric * %(span)s / %(n)s)::bigint AS t FROM generate_series("
                "%(lo)s::bigint, %(hi)s::bigint - 1) AS g) AS x "
                "JOIN (SELECT * FROM (VALUES " + ",".join(f"({i}, '{s}', '{cl}')" for i, (s, cl) in
                                                          enumerate(SOURCES)) + ") AS v(k, id, client)) AS s "
                f"ON s.k = x.g %% {len(SOURCES)}",
                {"now": now, "span": span, "n": rows, "lo": lo, "hi": hi})
            log(f"{layout}: {hi} rows loaded")
        loaded = time.perf_counter() - t0
        for ix in schema.requests.indexes:
            unique = "UNIQUE " if ix.unique and layout == "flat" else ""
            c.execute(f"CREATE {unique}INDEX {ix.name} ON requests ({', '.join(col.name for col in ix.columns)})")
            log(f"{layout}: index {ix.name}")
        if layout == "part":  # at head: the free-text index beside the log (migration 0013)
            c.execute("CREATE INDEX ix_requests_text_txid ON requests (text_txid)")
            with eng.begin() as conn:
                pg_index_all(conn)
        else:  # at 0010; upgrading to head below moves it beside the log
            c.execute(f"CREATE INDEX ix_requests_text_trgm ON requests USING gin ({PG_EXPR} gin_trgm_ops)")
        log(f"{layout}: trigram index")
        c.execute("VACUUM ANALYZE requests")
        if layout == "part":
            with eng.connect() as conn:
                parts = P.partitions(conn)
            for p in parts:
                c.execute(f"VACUUM ANALYZE {p.name}")
        eng.dispose()
        if layout == "flat":
            alembic(sa_url, "head")  # 0011 keeps a table that holds rows
        size = c.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
                         "WHERE c.relkind = 'r' AND (c.relname = 'requests' OR c.relname LIKE 'requests_p2%%' "
                         "OR c.relname = 'requests_default')").fetchone()
        log(f"{layout}: built in {time.perf_counter() - t0:.0f} s (rows {loaded:.0f} s), {size[0] if size else '?'}")
    return url


async def timed(fn, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    await fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.95))]


async def measure(url: str, layout: str, rows: int, days: int, now: int, repeat: int) -> dict[str, str]:
    store = Store(url.replace("postgresql://", "postgresql+psycopg://", 1))
    res: dict[str, str] = {}
    src, client = SOURCES[3]
    mid = now - (days // 2) * DAY
    probe = rows // 2 + 3  # a row in the middle, of source 3
    # the generation's "now" (a reused database was made earlier)
    now = int(await store.read(lambda c: c.execute(sa.text("SELECT max(received_at) FROM requests")).scalar())) \
        + (days * DAY) // rows + 1
    rid = await store.read(lambda c: c.execute(sa.text(
        "SELECT id FROM requests WHERE received_at >= :t ORDER BY received_at LIMIT 1"),
        {"t": now - days * DAY + probe * (days * DAY) // rows}).scalar())
    cases = {
        "tail: newest 50 (admin)": RequestFilter(limit=50),
        "tail: newest 50 of one client": RequestFilter(client_id=client, limit=50),
        "search: one source, 1 h window mid-span": RequestFilter(source_id=src, since_us=mid,
                                                                    until_us=mid + 3_600_000_000, limit=50),
        "search: one client, state=rejected, last 24 h": RequestFilter(client_id="client0", state="rejected",
                                                                       since_us=now - DAY, limit=50),
        "search: body text (an email), last 24 h": RequestFilter(text=f"user{rows - 1000}@", since_us=now - DAY,
                                                                 limit=50),
        "search: body text (an email), all time": RequestFilter(text=f"user{probe}@", limit=50),
    }
    for label, f in cases.items():
        got: list[int] = []

        async def run(f: RequestFilter = f, got: list[int] = got) -> None:
            got.append(len(await store.search_requests(f)))

        med, p95 = await timed(run, repeat)
        res[label] = f"{med:.1f} / {p95:.1f}"
        log(f"{layout}: {label}: {med:.1f} ms median, {p95:.1f} p95 ({got[-1]} rows)")

    async def receipt() -> None:
        await store.get_request(rid)

    med, p95 = await timed(receipt, repeat)
    res["receipt: one request by id"] = f"{med:.1f} / {p95:.1f}"
    log(f"{layout}: receipt {med:.2f} ms")

    # retention of the oldest whole day
    first = P.interval_start(now - days * DAY + DAY, "day")
    lo = P.to_us(first)
    hi = lo + DAY
    n_day = await store.read(lambda c: c.execute(sa.text(
        "SELECT count(*) FROM requests WHERE received_at >= :lo AND received_at < :hi"), {"lo": lo, "hi": hi}).scalar())

    def purge(conn: sa.Connection) -> int:
        return int(conn.execute(sa.text("UPDATE requests SET body = NULL WHERE received_at >= :lo AND received_at < :hi"
                                        " AND body IS NOT NULL"), {"lo": lo + DAY, "hi": hi + DAY}).rowcount)

    t = time.perf_counter()
    purged = await store.maintain(purge, statement_timeout_ms=0)
    res["retention: body purge of a day (UPDATE)"] = f"{(time.perf_counter() - t) * 1000:.0f} ({purged} rows)"
    log(f"{layout}: body purge {res['retention: body purge of a day (UPDATE)']}")
    if layout == "flat":
        def delete(conn: sa.Connection) -> int:
            return int(conn.execute(sa.text("DELETE FROM requests WHERE received_at >= :lo AND received_at < :hi"),
                                    {"lo": lo, "hi": hi}).rowcount)

        t = time.perf_counter()
        deleted = await store.maintain(delete, statement_timeout_ms=0)
        res["retention: a day's rows removed"] = f"DELETE {(time.perf_counter() - t) * 1000:.0f} ({deleted} rows)"
    else:
        name = "requests_p" + first.strftime("%Y%m%d")
        t = time.perf_counter()
        ok = await store.maintain(lambda c: P.drop_if_idle(c, name), statement_timeout_ms=0)
        assert ok
        res["retention: a day's rows removed"] = f"DROP {(time.perf_counter() - t) * 1000:.0f} ({n_day} rows)"
    log(f"{layout}: retention {res['retention: a day' + chr(39) + 's rows removed']}")
    store.read_engine.dispose()
    store.write_engine.dispose()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--layouts", default="flat,part")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="measure a database kept by an earlier run (--keep)")
    ap.add_argument("--out", default=f"bench/results/partitions-{datetime.now(UTC):%Y%m%d}.md")
    a = ap.parse_args()
    now = int(time.time()) * 1_000_000
    results: dict[str, dict[str, str]] = {}
    loads: dict[str, str] = {}
    for layout in a.layouts.split(","):
        url = build(a.pg, layout, a.rows, a.days, now, a.reuse)
        loads[layout] = load_avg()
        results[layout] = asyncio.run(measure(url, layout, a.rows, a.days, now, a.repeat))
        loads[layout] += " → " + load_avg()
        if not a.keep:
            with psycopg.connect(a.pg, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "partitions_bench_{layout}" WITH (FORCE)')
    names = {"flat": "unpartitioned", "part": "partitioned by day"}
    with psycopg.connect(a.pg) as c:
        server = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    layouts = list(results)
    lines = [f"# Request log on PostgreSQL: unpartitioned vs partitioned ({datetime.now(UTC):%Y-%m-%d})", "",
             f"`.venv/bin/python bench/partitions.py --rows {a.rows} --days {a.days} --repeat {a.repeat}`: "
             f"{a.rows:,} requests over {a.days} days ({a.rows // a.days:,} a day), 20 sources of 4 clients, "
             f"PostgreSQL {server}, 2 shared cores. Times in ms, "
             "median / p95 of the runs; retention is one run.", "",
             "| measurement | " + " | ".join(names[x] for x in layouts) + " |",
             "|---|" + "---|" * len(layouts)]
    for key in results[layouts[0]]:
        lines.append(f"| {key} | " + " | ".join(results[x].get(key, "-") for x in layouts) + " |")
    lines += ["", "Load average (1, 5, 15 min) before → after each layout's measurements: "
              + "; ".join(f"{names[x]}: {loads[x]}" for x in layouts), ""]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
