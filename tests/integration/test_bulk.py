"""store/bulk.py (the worker's set-at-a-time writes) round-trips every value on both dialects, and
claim_jobs picks expired leases first, then due jobs in due order, whatever the backlog."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from hookbay.ids import now_us
from hookbay.store import Store, bulk, schema

R = schema.records
TRICKY = ["plain", "", "é ü 漢字", "tab\tnew\nline", "sep\x1fin", "null\x1emark", "quote\"'{},\\", "NULL", " "]


def _url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def store(db_url: str):  # type: ignore[no-untyped-def]
    st = Store(_url(db_url))
    st.migrate()
    yield st
    st.read_engine.dispose()
    st.write_engine.dispose()


def _rec(i: int, text: str | None, profile: str | None) -> tuple[object, ...]:
    return (f"req_{i:04d}", i, "src", "acme", "contact", "1", text if text is not None else "{}", profile, 10**15 + i)


COLS = ("request_id", "idx", "source_id", "client_id", "parser", "parser_version", "data", "profile_id", "created_at")


@pytest.mark.parametrize("n", [1, 2, 9])
def test_insert_update_select_delete_round_trip(store: Store, n: int) -> None:
    rows = [_rec(i, TRICKY[i % len(TRICKY)], None if i % 2 else TRICKY[(i + 3) % len(TRICKY)]) for i in range(n)]
    with store.write_engine.begin() as conn:
        bulk.insert(conn, R, COLS, rows)
        got = bulk.select_in(conn, R, COLS, "request_id", [r[0] for r in rows])
        assert sorted(got) == sorted(rows)
        ids = bulk.insert(conn, R, COLS, rows, on_conflict_nothing=True, returning=("request_id",))
        assert ids == []  # every row hit the unique key
        new = [(TRICKY[(i + 1) % len(TRICKY)], None if i % 3 else "p", r[0]) for i, r in enumerate(rows)]
        bulk.update(conn, R, "request_id", ("data", "profile_id"), new)
        got = {r[0]: (r[1], r[2]) for r in bulk.select_in(conn, R, ("request_id", "data", "profile_id"),
                                                             "request_id", [r[0] for r in rows])}
        assert got == {rid: (d, p) for d, p, rid in new}
        bulk.delete_in(conn, R, "request_id", [r[0] for r in rows[: n // 2]])
        left = conn.execute(sa.select(sa.func.count()).select_from(R)).scalar()
        assert left == n - n // 2


def test_pg_array_falls_back_for_values_that_look_like_markers() -> None:
    assert bulk.pg_array(["a", "b"], "text[]")[0].startswith("string_to_array")
    for values in (["a\x1fb"], ["x\x1e"], [""], [b"bytes"], ["a", 1]):
        kind = "bytea[]" if values == [b"bytes"] else "text[]"
        assert bulk.pg_array(values, kind)[0].startswith("%b::")


async def test_claim_takes_expired_leases_then_due_jobs_in_due_order(db_url: str) -> None:
    st = Store(_url(db_url))
    await asyncio.to_thread(st.migrate)
    await st.start()
    try:
        now = now_us()
        J = schema.jobs

        def seed(conn: sa.Connection) -> None:
            for rid, run_after, state, until in (
                ("late", now - 10, "pending", None), ("early", now - 1000, "pending", None),
                ("future", now + 10**9, "pending", None), ("dead", now - 5, "running", now - 1),
                ("busy", now - 5, "running", now + 10**9),
            ):
                conn.execute(J.insert().values(request_id=rid, run_after=run_after, state=state, locked_until=until,
                                               locked_by=None if until is None else "someone"))

        await st.write(seed)
        got = await st.claim_jobs("me", 10, 30)
        assert [j.request_id for j in got] == ["dead", "early", "late"]
        assert [j.attempts for j in got] == [1, 1, 1]
        assert await st.claim_jobs("me", 10, 30) == []
    finally:
        await st.close()
