"""The time-partitioned request log on PostgreSQL (issue #17, SPEC section 9): partitions made
ahead and listed, rows in the partition of their time, retention dropping whole partitions (never
one with work left), and `hookbay partitions migrate` resumable while a server keeps ingesting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from hookbay.errors import NotFound
from hookbay.ids import new_request_id, now_us
from hookbay.ops import partitions as ops
from hookbay.store import Store
from hookbay.store import partitions as P
from hookbay.store.sources import SourceCache
from tests.conftest import ADMIN_TOKEN, make_settings

DAY = 86_400_000_000
# 2026-11-26 12:00 UTC, a Thursday
NOON = int(datetime(2026, 11, 26, 12, tzinfo=UTC).timestamp()) * 1_000_000



def _sa(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


async def _open(url: str) -> Store:
    store = Store(_sa(url))
    await asyncio.to_thread(store.migrate)
    await store.start()
    return store


def _row(source_id: str | None, at: int, state: str = "processed", rid: str | None = None) -> dict:
    return {
        "id": rid or new_request_id(at // 1000), "source_id": source_id, "client_id": "acme", "received_at": at,
        "method": "POST", "path": "/V1/Data/x", "query": "", "headers": "[]", "peer": "127.0.0.1",
        "content_type": "application/json", "body": b'{"a":1}', "body_size": 7,
        "verdict": "accepted" if source_id else "rejected", "rule": None, "status": 200, "state": state,
        "idempotency_key": None, "duplicate_of": None, "receipt": None, "processed_at": None,
    }


async def _where(store: Store, ids: list[str]) -> dict[str, str]:
    def q(conn: sa.Connection) -> dict[str, str]:
        return {r[0]: r[1] for r in conn.execute(
            sa.text("SELECT id, tableoid::regclass::text FROM requests WHERE id = ANY(:ids)"), {"ids": ids})}

    return await store.read(q)


async def test_ensure_makes_the_partitions_ahead_once_and_rows_land_in_their_own(pg_url: str, tmp_path: Path) -> None:
    store = await _open(pg_url)
    try:
        s = make_settings(pg_url, tmp_path)
        assert await ops.is_partitioned(store)
        made = await ops.ensure(store, s, now=NOON)
        assert made == [f"requests_p202611{d}" for d in range(26, 31)] + ["requests_p20261201", "requests_p20261202",
                                                                            "requests_p20261203"]
        assert await ops.ensure(store, s, now=NOON) == []  # idempotent
        listed = await ops.list_partitions(store)
        assert [p["name"] for p in listed] == made + ["requests_default"]
        assert listed[0]["from_us"] == NOON - DAY // 2 and listed[0]["to_us"] == NOON + DAY // 2
        assert listed[-1]["from_us"] is None

        today, later, before = _row(None, NOON), _row(None, NOON + 3 * DAY), _row(None, NOON - 5 * DAY)
        far = _row(None, NOON + 30 * DAY)
        for r in (today, later, before, far):
            await store.writer.ingest(r)
        assert await _where(store, [today["id"], later["id"], before["id"], far["id"]]) == {
            today["id"]: "requests_p20261126", later["id"]: "requests_p20261129",
            before["id"]: "requests_default", far["id"]: "requests_default"}

        # a month later with weekly partitions: the rows waiting in the default partition move into
        # the new one in the same transaction; the existing daily ones are left as they are
        wk = make_settings(pg_url, tmp_path, partition_interval="week", partition_ahead=1)
        made = await ops.ensure(store, wk, now=NOON + 30 * DAY)
        assert made == ["requests_p20261221", "requests_p20261228"]
        assert (await _where(store, [far["id"]]))[far["id"]] == "requests_p20261221"
        counts = {p["name"]: p["rows"] for p in await ops.list_partitions(store)}
        assert counts["requests_default"] == 1 and counts["requests_p20261221"] == 1
        assert sum(counts.values()) == await store.count_requests() == 4
    finally:
        await store.close()


async def test_a_request_is_found_by_id_in_its_partition_or_wherever_it_is(pg_url: str, tmp_path: Path) -> None:
    store = await _open(pg_url)
    try:
        await ops.ensure(store, make_settings(pg_url, tmp_path), now=NOON)
        usual = _row(None, NOON)
        odd = {**_row(None, NOON + 2 * DAY), "id": new_request_id(NOON // 1000)}  # its id says another day
        for r in (usual, odd):
            await store.writer.ingest(r)
        assert (await store.get_request(usual["id"])).received_at == NOON
        assert (await store.get_request(odd["id"])).received_at == NOON + 2 * DAY
        with pytest.raises(NotFound):
            await store.get_request(new_request_id(NOON // 1000))
        with pytest.raises(NotFound):
            await store.get_request(usual["id"], client_id="other")
    finally:
        await store.close()


def test_cli_lists_and_ensures_and_sqlite_says_why_not(pg_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "HOOKBAY_DATABASE_URL": pg_url, "HOOKBAY_PARTITION_AHEAD": "2"}
    hb = [sys.executable, "-m", "hookbay"]
    assert subprocess.run([*hb, "migrate"], env=env, capture_output=True, timeout=120).returncode == 0
    today = datetime.now(UTC).strftime("%Y%m%d")
    p = subprocess.run([*hb, "partitions", "list", "--json"], env=env, capture_output=True, text=True, timeout=60)
    listed = [r["name"] for r in json.loads(p.stdout)]  # `hookbay migrate` made today's and 2 more
    assert len(listed) == 4 and listed[0] == f"requests_p{today}" and listed[-1] == "requests_default"
    eng = sa.create_engine(_sa(pg_url))
    with eng.begin() as c:
        c.execute(sa.text(f"DROP TABLE {listed[1]}"))
    eng.dispose()
    p = subprocess.run([*hb, "partitions", "ensure", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout) == {"created": [listed[1]]}, p.stderr
    p = subprocess.run([*hb, "partitions", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and f"requests_p{today}" in p.stdout and "requests_default" in p.stdout
    sqlite_env = {**os.environ, "HOOKBAY_DATA_DIR": str(tmp_path)}
    assert subprocess.run([*hb, "migrate"], env=sqlite_env, capture_output=True, timeout=120).returncode == 0
    p = subprocess.run([*hb, "partitions", "list"], env=sqlite_env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "not partitioned" in p.stderr and "Traceback" not in p.stderr


def test_served_requests_land_in_todays_partition(pg_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    live = live_server_factory(pg_url)
    src = live.create_source(name="p")
    rid = live.client.post(f"/V1/Data/{src['token']}", json={"email": "a@b.co"}).json()["request_id"]
    live.wait_state(rid)
    eng = sa.create_engine(_sa(pg_url))
    with eng.connect() as c:
        where = c.execute(sa.text("SELECT tableoid::regclass::text FROM requests WHERE id = :i"), {"i": rid}).scalar()
    eng.dispose()
    assert where == "requests_p" + datetime.now(UTC).strftime("%Y%m%d")


async def test_retention_drops_whole_partitions_but_never_one_with_work_left(pg_url: str, tmp_path: Path) -> None:
    store = await _open(pg_url)
    try:
        s = make_settings(pg_url, tmp_path, partition_ahead=1)
        short, _ = await store.create_source(name="short", client_id="acme", config={"retention_days": 2})
        longer, _ = await store.create_source(name="long", client_id="acme", config={"retention_days": 4})
        forever, _ = await store.create_source(name="forever", client_id="acme", config={})
        await ops.ensure(store, s, now=NOON - 10 * DAY)
        for d in range(9, 0, -1):
            await ops.ensure(store, s, now=NOON - d * DAY)
        day = {d: NOON - d * DAY for d in range(1, 11)}
        rows = {
            10: [_row(short.id, day[10]), _row(None, day[10])],  # no source: the longest retention, 4 days
            9: [_row(short.id, day[9]), _row(short.id, day[9], state="pending")],  # not processed yet
            8: [_row(short.id, day[8]), _row(forever.id, day[8])],  # a source that keeps for ever
            7: [_row(longer.id, day[7])],
            3: [_row(short.id, day[3]), _row(longer.id, day[3])],  # longer's rows are 3 days old
            2: [_row(short.id, day[2])],  # today - 2 days, within its partition: not all past yet
        }
        for rs in rows.values():
            for r in rs:
                await store.writer.ingest(r)
        job_held = _row(short.id, day[7] + 1000)  # processed, but its job row is still there
        await store.writer.ingest({**job_held, "state": "pending"})

        def processed(conn: sa.Connection) -> None:
            conn.execute(sa.text("UPDATE requests SET state = 'processed' WHERE id = :i"), {"i": job_held["id"]})
        await store.maintain(processed)

        cache = SourceCache(store, 1 << 20)
        await cache.reload()
        dry = {p["partition"]: p for p in await ops.drop_expired(store, cache, now=NOON, dry_run=True)}
        assert dry["requests_p20261116"]["action"] == "would drop" and dry["requests_p20261116"]["rows"] == 2
        assert await store.count_requests() == 11  # a dry run drops nothing

        out = {p["partition"]: (p["action"], p["reason"]) for p in await ops.drop_expired(store, cache, now=NOON)}
        assert out["requests_p20261116"] == ("dropped", None)
        assert out["requests_p20261117"] == ("kept", "pending work")
        assert out["requests_p20261118"] == ("kept", "within retention")
        assert out["requests_p20261119"] == ("kept", "pending work")  # the job of job_held
        assert out["requests_p20261123"] == ("kept", "within retention")
        assert out["requests_p20261124"] == ("kept", "within retention")
        assert "requests_p20261126" not in out  # not over yet
        assert "requests_p20261120" in out and out["requests_p20261120"][0] == "dropped"  # empty and past
        names = {p.name for p in await store.read(P.partitions)}
        assert "requests_p20261116" not in names and "requests_p20261117" in names
        assert await store.count_requests() == 9
        for r in rows[9] + rows[8] + rows[7] + [job_held]:
            await store.get_request(r["id"])  # still there
        # a dropped partition takes its rows' free-text entries with it; the others keep theirs
        while store.text_indexer.step():
            pass
        indexed = set(await store.read(lambda c: c.execute(sa.text("SELECT id FROM request_text")).scalars().all()))
        assert not indexed & {r["id"] for r in rows[10]}
        assert {r["id"] for r in rows[9] + rows[8] + rows[7] + [job_held]} <= indexed
    finally:
        await store.close()


async def test_a_drop_refuses_a_partition_that_gained_work_after_the_check(pg_url: str, tmp_path: Path) -> None:
    store = await _open(pg_url)
    try:
        await ops.ensure(store, make_settings(pg_url, tmp_path, partition_ahead=1), now=NOON - 5 * DAY)
        r = _row(None, NOON - 5 * DAY, state="pending")
        await store.writer.ingest(r)
        assert await store.maintain(lambda c: P.drop_if_idle(c, "requests_p20261121")) is False
        assert (await store.get_request(r["id"])).state == "pending"
        assert await store.maintain(lambda c: P.drop_if_idle(c, "requests_p20261122")) is True  # empty
        assert await store.maintain(lambda c: P.drop_if_idle(c, "requests_p20261122")) is None  # gone already
    finally:
        await store.close()


# --- migrate ------------------------------------------------------------------------------------

PRELOAD = 30_000


def _unpartitioned_database(url: str) -> None:
    """A database as 0010 left it, holding requests: 0012 then keeps the table as it is."""
    eng = sa.create_engine(_sa(url))
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(P.__file__).resolve().parent.parent / "migrations"))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0010")
    now = now_us()
    with eng.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO requests (id, source_id, client_id, received_at, method, path, headers, body, body_size, "
            "verdict, status, state) SELECT 'req_' || lpad(to_hex(g), 36, '0'), NULL, 'acme', "
            ":now - (g::bigint * 60000000), 'POST', '/V1/Data/x', '[]', '\\x7b7d'::bytea, 2, 'rejected', 404, "
            "'rejected' FROM generate_series(1, :n) g"), {"now": now, "n": PRELOAD})
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with eng.connect() as conn:
        assert not P.is_partitioned(conn)
    eng.dispose()
    env = {**os.environ, "HOOKBAY_DATABASE_URL": url}
    doctor = subprocess.run([sys.executable, "-m", "hookbay", "doctor"], env=env, capture_output=True, text=True,
                            timeout=60).stdout
    assert "warn  partitions: the request log is not partitioned" in doctor and "partitions migrate" in doctor


def test_migrate_killed_midway_and_rerun_under_concurrent_ingest_loses_and_doubles_nothing(
        pg_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    _unpartitioned_database(pg_url)
    live = live_server_factory(pg_url)
    src = live.create_source(name="m")
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def ingest() -> None:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                headers = {"Idempotency-Key": f"k{i}"} if i % 3 == 0 else {}
                r = c.post(f"/V1/Data/{src['token']}", json={"n": i}, headers=headers)
                if r.status_code == 200:
                    acked.append(r.json()["request_id"])
                else:
                    failures.append(f"{r.status_code} {r.text}")

    env = {**os.environ, "HOOKBAY_DATABASE_URL": pg_url, "HOOKBAY_PARTITION_AHEAD": "2"}
    cmd = [sys.executable, "-m", "hookbay", "partitions", "migrate", "--batch", "500"]
    t = threading.Thread(target=ingest)
    t.start()
    try:
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert first.stderr is not None
        lines = 0
        for line in first.stderr:  # kill it in the middle of the copy
            lines += line.startswith("copied ")
            if lines == 10:
                first.send_signal(signal.SIGKILL)
                break
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        eng = sa.create_engine(_sa(pg_url))
        with eng.connect() as conn:
            progress = P.migrate_progress(conn)
            assert progress["copying"] and not progress["partitioned"] and progress["cursor"]
            copied = conn.execute(sa.text(f"SELECT count(*) FROM {P.NEW}")).scalar()
            assert 0 < copied < PRELOAD + len(acked) + 1000
        time.sleep(0.3)  # ingest carries on between the two runs (the trigger mirrors it)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr
        assert "migrated:" in second.stdout
        time.sleep(0.3)  # and after the swap, into the partitioned table
    finally:
        stop.set()
        t.join(timeout=60)
    assert failures == []
    assert len(acked) > 20
    with eng.connect() as conn:
        assert P.is_partitioned(conn)
        assert not P.table_exists(conn, P.NEW)
        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM requests"))]
        names = {r[0] for r in conn.execute(sa.text("SELECT tableoid::regclass::text FROM requests"))}
        trigger = conn.execute(sa.text("SELECT count(*) FROM pg_trigger WHERE tgname = :t"),
                               {"t": P.MIRROR_FN}).scalar()
    eng.dispose()
    assert len(ids) == len(set(ids)) == PRELOAD + len(acked)  # none doubled
    assert set(acked) <= set(ids)  # none acknowledged lost
    assert {f"req_{i:036x}" for i in range(1, PRELOAD + 1)} <= set(ids)  # none of the old ones lost
    assert f"requests_p{datetime.now(UTC).strftime('%Y%m%d')}" in names and trigger == 0
    rid = acked[-1]
    assert live.client.get(f"/V1/Requests/{rid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    # a third run has nothing to do
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "already partitioned" in third.stdout
