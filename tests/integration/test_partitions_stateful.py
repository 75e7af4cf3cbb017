"""Partition upkeep and retention as stateful rules (issue #17): a hypothesis state machine ingests
requests of sources with different retentions (some left unprocessed), processes them, lets days
pass, makes partitions ahead and runs retention, and after every step compares the stored request
ids and the partition each sits in with a small reference model. PostgreSQL only (SQLite has no
partitions)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from hookbay.ids import new_request_id
from hookbay.ops import partitions as ops
from hookbay.store import Store
from hookbay.store.sources import SourceCache
from tests.conftest import drop_pg_database, make_pg_database, make_settings

EXAMPLES = int(os.environ.get("HOOKBAY_STATEFUL_EXAMPLES", "10"))
DAY = 86_400_000_000
AHEAD = 2
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000
RETENTION = {"short": 1, "long": 3, "forever": None}


class Model:
    """Days are integers counted from T0; a partition per day, a default one for the rest."""

    def __init__(self) -> None:
        self.parts: set[int] = set()
        self.rows: dict[str, tuple[int, str, bool]] = {}  # id -> (received µs, source name, pending)

    @staticmethod
    def day(us: int) -> int:
        return (us - T0) // DAY

    def where(self, rid: str) -> str:
        d = self.day(self.rows[rid][0])
        return f"requests_p{datetime.fromtimestamp((T0 + d * DAY) / 1e6, UTC):%Y%m%d}" if d in self.parts \
            else "requests_default"

    def ensure(self, now: int) -> None:
        self.parts |= set(range(self.day(now), self.day(now) + AHEAD + 1))

    def retention(self, now: int) -> None:
        for d in sorted(self.parts):
            if T0 + (d + 1) * DAY > now:
                continue
            rows = [r for r, (at, _, _) in self.rows.items() if self.day(at) == d]
            if all(RETENTION[self.rows[r][1]] is not None
                   and self.rows[r][0] < now - RETENTION[self.rows[r][1]] * DAY  # type: ignore[operator]
                   and not self.rows[r][2] for r in rows):
                self.parts.discard(d)
                for r in rows:
                    del self.rows[r]


class PartitionMachine(RuleBasedStateMachine):
    TMP = Path(".")

    def __init__(self) -> None:
        super().__init__()
        self.db, url = make_pg_database()
        self.loop = asyncio.new_event_loop()
        self.settings = make_settings(url, self.TMP, partition_ahead=AHEAD)
        self.store = Store(self.settings.effective_database_url)
        self.store.migrate()
        self.run(self.store.start())
        self.sources = {name: self.run(self.store.create_source(
            name=name, client_id="acme", config={"retention_days": days} if days else {}))[0].id
            for name, days in RETENTION.items()}
        self.cache = SourceCache(self.store, 1 << 20)
        self.run(self.cache.reload())
        self.now = T0 + DAY // 2
        self.model = Model()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        drop_pg_database(self.db)

    @rule(source=st.sampled_from(sorted(RETENTION)), back_hours=st.integers(0, 60), pending=st.booleans())
    def ingest(self, source: str, back_hours: int, pending: bool) -> None:
        at = self.now - back_hours * 3_600_000_000
        rid = new_request_id(at // 1000)
        self.run(self.store.writer.ingest({
            "id": rid, "source_id": self.sources[source], "client_id": "acme", "received_at": at, "method": "POST",
            "path": "/", "query": "", "headers": "[]", "peer": None, "content_type": "application/json",
            "body": b"{}", "body_size": 2, "verdict": "accepted", "rule": None, "status": 200,
            "state": "pending" if pending else "processed", "idempotency_key": None, "duplicate_of": None,
            "receipt": None, "processed_at": None}))
        if not pending:  # processed at once: its job is gone too
            self.run(self.store.maintain(lambda c: c.execute(sa.text("DELETE FROM jobs WHERE request_id = :i"),
                                                             {"i": rid})))
        self.model.rows[rid] = (at, source, pending)

    @precondition(lambda self: any(p for _, _, p in self.model.rows.values()))
    @rule(data=st.data())
    def process(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(r for r, (_, _, p) in self.model.rows.items() if p)))

        def done(c: sa.Connection) -> None:
            c.execute(sa.text("UPDATE requests SET state = 'processed' WHERE id = :i"), {"i": rid})
            c.execute(sa.text("DELETE FROM jobs WHERE request_id = :i"), {"i": rid})

        self.run(self.store.maintain(done))
        at, source, _ = self.model.rows[rid]
        self.model.rows[rid] = (at, source, False)

    @rule(hours=st.integers(1, 60))
    def time_passes(self, hours: int) -> None:
        self.now += hours * 3_600_000_000

    @rule()
    def ensure(self) -> None:
        self.run(ops.ensure(self.store, self.settings, now=self.now))
        self.model.ensure(self.now)

    @rule()
    def retention(self) -> None:
        self.run(ops.drop_expired(self.store, self.cache, now=self.now))
        self.model.retention(self.now)

    @invariant()
    def stored_rows_and_their_partitions_match_the_model(self) -> None:
        def q(c: sa.Connection) -> dict[str, str]:
            return {r[0]: r[1] for r in c.execute(sa.text("SELECT id, tableoid::regclass::text FROM requests"))}

        got = self.run(self.store.read(q))
        assert set(got) == set(self.model.rows), "no request lost, none kept past a drop"
        assert {r: self.model.where(r) for r in got} == got


def test_partitions_and_retention_follow_the_model(pg_ok: None, tmp_path: Path) -> None:
    if EXAMPLES <= 0:
        pytest.skip("HOOKBAY_STATEFUL_EXAMPLES=0")
    PartitionMachine.TMP = tmp_path
    run_state_machine_as_test(PartitionMachine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
