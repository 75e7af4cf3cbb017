"""Free-text request search on the index of migration 0010 (SQLite FTS5 trigram, PostgreSQL pg_trgm),
against a reference model, on both databases: rows stored plain or encrypted, bodies purged before
and after the SQLite indexer reached them, pages walked with either cursor beside another filter
(with a window of one row, so the index answers past it, asked for one trigram only), and
the query using the index."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from hookbay.crypto import Keyring
from hookbay.ids import new_request_id, new_source_id, now_us
from hookbay.store import RequestFilter, Store, search
from hookbay.store.schema import requests as R
from hookbay.store.search import pg_escape_bytes

WORDS = ["alpha", "Beta", "gamma", "café", "x_y%z", 'quo"te', "back\\slash", "12", "\x00\xff"]


def _url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


def _row(source_id: str, body: bytes | None, headers: list[list[str]], verdict: str = "accepted") -> dict[str, Any]:
    return {"id": new_request_id(), "source_id": source_id, "client_id": "acme", "received_at": now_us(),
            "method": "POST", "path": "/V1/Data/x", "query": "", "headers": orjson.dumps(headers).decode(),
            "peer": "127.0.0.1", "content_type": "text/plain", "body": body,
            "body_size": len(body or b""), "verdict": verdict, "rule": None, "status": 200,
            "state": "processed", "idempotency_key": None, "duplicate_of": None, "receipt": None,
            "processed_at": None}


def _expected(needle: str, body: bytes | None, headers: str, encrypted: bool) -> bool:
    n = needle.lower()
    text = "" if body is None or encrypted else body[:65536].decode("utf-8", "replace").lower()
    return n in text or n in headers.lower()


def test_pg_escape_matches_postgres_encode(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        return
    data = bytes(range(256)) + "café\\".encode()
    engine = sa.create_engine(_url(db_url))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT encode(:b, 'escape')"), {"b": data}).scalar() == pg_escape_bytes(data)
    engine.dispose()


def test_search_index_follows_a_reference_model(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny so that a few rows cross the window, ask the index for a subset of the trigrams, and
    # estimate a trigram's count from a partial read (SQLite) or a sample (PostgreSQL)
    monkeypatch.setattr(search, "WINDOW", 1)
    monkeypatch.setattr(search, "GRAMS", 1)
    monkeypatch.setattr(search, "PROBE_CAP", 2)
    monkeypatch.setattr(search, "SAMPLE", 3)
    plain = Store(_url(db_url))
    plain.migrate()
    sealed = Store(_url(db_url), keyring=Keyring([("k1", os.urandom(32))]))
    loop = asyncio.new_event_loop()

    class Machine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.source = new_source_id()
            self.model: dict[str, tuple[bytes | None, str, bool]] = {}
            self.rejected: set[str] = set()

        @rule(words=st.lists(st.sampled_from(WORDS), max_size=4), header=st.sampled_from(WORDS),
              encrypted=st.booleans(), pad=st.sampled_from([0, 70_000]), rejected=st.booleans())
        def store_request(self, words: list[str], header: str, encrypted: bool, pad: int, rejected: bool) -> None:
            body = ("." * pad + " ".join(words)).encode()
            row = _row(self.source, body, [["X-Note", header]], "rejected" if rejected else "accepted")
            if rejected:
                self.rejected.add(row["id"])
            if encrypted:
                sealed.seal_request_row(row)
            with plain.write_engine.begin() as c:
                c.execute(R.insert(), row)
            self.model[row["id"]] = (body, row["headers"], encrypted)

        @rule()
        def index(self) -> None:
            """The background indexer's step (SQLite): rows before the mark come from the index,
            the rest are checked one by one; both must answer the same."""
            if plain.text_indexer is not None:
                plain.text_indexer.step()

        @rule(data=st.data())
        def purge_body(self, data: st.DataObject) -> None:
            if not self.model:
                return
            rid = data.draw(st.sampled_from(sorted(self.model)))
            with plain.write_engine.begin() as c:
                c.execute(R.update().where(R.c.id == rid).values(body=None))
            _, headers, enc = self.model[rid]
            self.model[rid] = (None, headers, enc)

        @rule(needle=st.sampled_from(WORDS + ["ALPHA", "pha be", "afé", "note", "a\x00\xff", "A", "\" :", "%z"]))
        def search(self, needle: str) -> None:
            got = loop.run_until_complete(plain.search_requests(
                RequestFilter(source_id=self.source, text=needle, limit=1000)))
            want = {rid for rid, (b, h, e) in self.model.items() if _expected(needle, b, h, e)}
            assert {r.id for r in got} == want, needle

        @rule(data=st.data(), limit=st.integers(1, 4), newer=st.booleans(), rejected=st.booleans())
        def walk_pages(self, data: st.DataObject, limit: int, newer: bool, rejected: bool) -> None:
            """Every page, by either cursor, with or without another filter: the matches in id
            order, each once."""
            # a word some rows hold, most of the time: pages with several matches
            needle = data.draw(st.sampled_from(WORDS + ["ALPHA", "pha be", "a", "alpha gamma", "Beta alpha"])
                               | st.sampled_from([b.decode("utf-8", "replace").strip(".")[:12] or "alpha"
                                                  for b, _, _ in self.model.values() if b] or ["alpha"]))
            want = sorted((rid for rid, (b, h, e) in self.model.items() if _expected(needle, b, h, e)
                           and (not rejected or rid in self.rejected)), reverse=not newer)
            got: list[str] = []
            cursor = "req_" if newer else None
            for _ in range(len(want) + 2):
                page = loop.run_until_complete(plain.search_requests(RequestFilter(
                    source_id=self.source, text=needle, limit=limit, verdict="rejected" if rejected else None,
                    after_id=cursor if newer else None, before_id=None if newer else cursor)))
                got += [r.id for r in page]
                if len(page) < limit:
                    break
                cursor = page[-1].id
            assert got == want, needle

        @invariant()
        def newest_first(self) -> None:
            got = loop.run_until_complete(plain.search_requests(RequestFilter(source_id=self.source, limit=1000)))
            assert [r.id for r in got] == sorted(self.model, reverse=True)

    try:
        from hypothesis.stateful import run_state_machine_as_test

        run_state_machine_as_test(Machine, settings=settings(
            max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        loop.close()
        for s in (plain, sealed):
            if s.text_indexer is not None:
                s.text_indexer.engine.dispose()
            s.read_engine.dispose()
            s.write_engine.dispose()


def test_text_search_uses_the_index(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the window the index drives, beside a source's index and without statistics: SQLite
    looks rows up by the rowids FTS5 gives, PostgreSQL scans the trigram index."""
    monkeypatch.setattr(search, "WINDOW", 1)
    store = Store(_url(db_url))
    store.migrate()
    source = new_source_id()
    for _ in range(3):
        with store.write_engine.begin() as c:
            c.execute(R.insert(), _row(source, b"a needle", [["X", "y"]]))
    plans: list[str] = []

    def explain(conn: sa.Connection, sql: str, params: Any = None, *a: Any, **k: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT REQUESTS.ID") and "requests_fts MATCH" in sql:
            plans.append("\n".join(str(r[-1]) for r in orig(conn, "EXPLAIN QUERY PLAN " + sql, params)))
        return orig(conn, sql, params, *a, **k)

    orig = sa.Connection.exec_driver_sql
    monkeypatch.setattr(sa.Connection, "exec_driver_sql", explain)
    try:
        got = asyncio.run(store.search_requests(RequestFilter(source_id=source, text="needle", limit=50)))
        assert len(got) == 3
        if store.is_postgres:
            with store.read_engine.connect() as conn:
                cond = search._index_condition(conn, "needle", postgres=True)
                assert cond is not None
                stmt = sa.select(R.c.id).where(cond)
                sql = str(stmt.compile(store.read_engine, compile_kwargs={"literal_binds": True}))
                conn.execute(sa.text("SET enable_seqscan = off"))
                plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql.replace("%%", "%"))))
            # the trigram table beside the log, and the mark's index for rows not indexed yet
            assert "ix_request_text_trgm" in plan and "text_txid" in plan, plan
        else:
            assert len(plans) == 1, plans
            assert "requests_fts VIRTUAL TABLE" in plans[0], plans[0]
            assert "SEARCH requests USING INTEGER PRIMARY KEY (rowid=?)" in plans[0], plans[0]
    finally:
        if store.text_indexer is not None:
            store.text_indexer.engine.dispose()
        store.read_engine.dispose()
        store.write_engine.dispose()


def test_rarest_trigrams() -> None:
    counts = {"use": 900, "r50": 12, "500": 40, "00@": 12, "com": 990}
    assert search.rarest(counts, 3) == ["r50", "500", "00@"]
    assert search.rarest(counts, 1) == ["r50"]
    assert search._grams("AbCabc") == ["AbC", "bCa", "Cab"]


def test_indexer_writes_when_nobody_rewinds_a_large_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The indexer rests while the WAL is past its bound, for ingest's writer to rewind it; with no
    ingest nobody does, and it must not rest for ever: the backlog is indexed all the same."""
    from hookbay.store.search import TextIndexer

    store = Store(f"sqlite:///{tmp_path / 'idx.db'}")
    store.migrate()
    source = new_source_id()
    with store.write_engine.begin() as c:
        for _ in range(5):
            c.execute(R.insert(), _row(source, b"a needle", [["X", "y"]]))
    monkeypatch.setattr(TextIndexer, "IDLE_S", 0.01)
    idx = TextIndexer(store.dialect.create_engine(writer=True), wal_over_limit=lambda: True)
    idx.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            with store.read_engine.connect() as c:
                upto = c.execute(sa.text("SELECT upto FROM requests_fts_state")).scalar()
                last = c.execute(sa.text("SELECT max(rowid) FROM requests")).scalar()
            if upto == last:
                break
            assert time.monotonic() < deadline, "the indexer never wrote while the WAL stayed large"
            time.sleep(0.02)
    finally:
        idx.stop()
        if store.text_indexer is not None:
            store.text_indexer.engine.dispose()
        store.read_engine.dispose()
        store.write_engine.dispose()



def test_pg_indexer_never_moves_its_mark_past_a_transaction_still_running(pg_url: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL indexes after the commit, up to the oldest transaction still running: a row
    whose transaction began first but commits last (another lane, another process) is indexed
    once it commits, never skipped; a search finds it before and after; a delete takes its
    entry with it."""
    monkeypatch.setattr(search, "WINDOW", 1)
    store = Store(_url(pg_url))
    store.migrate()
    source = new_source_id()
    late, early = _row(source, b"slow needle", [["X", "y"]]), _row(source, b"fast needle", [["X", "y"]])
    try:
        assert store.text_indexer is not None
        while store.text_indexer.step():
            pass
        with store.write_engine.connect() as slow:
            tx = slow.begin()
            slow.execute(R.insert(), late)  # its transaction id is taken now, before the other's
            with store.write_engine.begin() as c:
                c.execute(R.insert(), early)
            store.text_indexer.step()

            def indexed() -> set[str]:
                with store.read_engine.connect() as c:
                    return set(c.execute(sa.text("SELECT id FROM request_text WHERE id IN (:a, :b)"),
                                         {"a": late["id"], "b": early["id"]}).scalars())
            assert indexed() == set()  # the mark waits for the older transaction
            tx.commit()
        found = asyncio.run(store.search_requests(RequestFilter(source_id=source, text="needle", limit=10)))
        assert {r.id for r in found} == {late["id"], early["id"]}
        while store.text_indexer.step():
            pass
        assert indexed() == {late["id"], early["id"]}
        found = asyncio.run(store.search_requests(RequestFilter(source_id=source, text="slow needle", limit=10)))
        assert [r.id for r in found] == [late["id"]]
        with store.write_engine.begin() as c:
            c.execute(R.delete().where(R.c.id == late["id"]))
        assert indexed() == {early["id"]}
    finally:
        store.text_indexer.engine.dispose()
        store.read_engine.dispose()
        store.write_engine.dispose()
