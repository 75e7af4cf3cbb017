"""Dedupe by key as a stateful rule (issue #15): a hypothesis state machine sends keyed requests
through two real writers on one database (as two processes would), alone or racing, lets time pass
and runs the retention that forgets keys, and after every step compares the answers and the stored
rows with tests/models/dedupe.py. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from hookbay.ids import new_request_id
from hookbay.store import Store, schema
from tests.conftest import make_settings
from tests.models.dedupe import DedupeModel

EXAMPLES = int(os.environ.get("HOOKBAY_STATEFUL_EXAMPLES", "10"))
DAY = 86_400_000_000
WINDOW_DAYS = 3
KEYS = ["evt_a", "evt_b", "evt_c"]
T0 = 1_750_000_000_000_000


def _row(source_id: str, key: str, at: int) -> dict[str, Any]:
    return {"id": new_request_id(), "source_id": source_id, "client_id": "acme", "received_at": at,
            "method": "POST", "path": "/", "query": "", "headers": "[]", "peer": None,
            "content_type": "application/json", "body": b"{}", "body_size": 2, "verdict": "accepted",
            "rule": None, "status": 200, "state": "pending", "idempotency_key": key, "duplicate_of": None,
            "receipt": None, "processed_at": None}


class DedupeMachine(RuleBasedStateMachine):
    URL = ""
    TMP = Path(".")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        settings = make_settings(self.URL, self.TMP)
        self.stores = [Store(settings.effective_database_url), Store(settings.effective_database_url)]
        for s in self.stores:
            self.run(s.start())
        self.sources = [self.run(self.stores[0].create_source(name=f"s{i}-{uuid.uuid4().hex[:6]}",
                                                              client_id="acme", config={}))[0].id
                        for i in range(2)]
        self.model = DedupeModel(window_us=WINDOW_DAYS * DAY)
        self.now = T0
        self.sent: list[str] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        for s in self.stores:
            self.run(s.close())
        self.loop.close()

    def _expect(self, source: str, key: str, answers: list[tuple[str, str]]) -> None:
        """``answers``: (sent id, answered id) for requests with one key sent together."""
        orig = self.model.original(source, key)
        answered = {a for _, a in answers}
        assert len(answered) == 1, "every request with one live key is answered with one id"
        got = answered.pop()
        if orig is None:
            assert got in {sent for sent, _ in answers}, "a new key's first request is the original"
            self.model.accept(source, key, got, self.now)
        else:
            assert got == orig, "a live key names its original however late"

    @rule(source=st.integers(0, 1), key=st.sampled_from(KEYS), via=st.integers(0, 1))
    def send(self, source: int, key: str, via: int) -> None:
        self.now += 1000
        row = _row(self.sources[source], key, self.now)
        got = self.run(self.stores[via].writer.ingest(row))
        self.sent.append(row["id"])
        self._expect(self.sources[source], key, [(row["id"], got)])

    @rule(source=st.integers(0, 1), key=st.sampled_from(KEYS), n=st.integers(2, 6))
    def race(self, source: int, key: str, n: int) -> None:
        """The same event reaches both writers at once."""
        self.now += 1000
        rows = [_row(self.sources[source], key, self.now) for _ in range(n)]

        async def both() -> list[str]:
            return list(await asyncio.gather(*(self.stores[i % 2].writer.ingest(r) for i, r in enumerate(rows))))

        got = self.run(both())
        self.sent += [r["id"] for r in rows]
        self._expect(self.sources[source], key, [(r["id"], g) for r, g in zip(rows, got, strict=True)])

    @rule(days=st.integers(1, 4))
    def time_passes_and_retention_runs(self, days: int) -> None:
        self.now += days * DAY
        forgot = self.run(self.stores[1].forget_idempotency_keys({s: WINDOW_DAYS for s in self.sources},
                                                                 now_us_=self.now))
        assert forgot == self.model.forget(self.now)

    @invariant()
    def stored_rows_match(self) -> None:
        if not self.sent:
            return
        R, J = schema.requests, schema.jobs

        def q(conn: sa.Connection) -> tuple[list[Any], set[str]]:
            rows = list(conn.execute(sa.select(R.c.id, R.c.source_id, R.c.idempotency_key, R.c.verdict,
                                               R.c.duplicate_of).where(R.c.source_id.in_(self.sources))))
            jobs = {r[0] for r in conn.execute(sa.select(J.c.request_id))}
            return rows, jobs

        rows, jobs = self.run(self.stores[0].read(q))
        assert len(rows) == len(self.sent), "every request is stored, duplicates too"
        keyed = {(r.source_id, r.idempotency_key): r.id for r in rows if r.idempotency_key is not None}
        assert keyed == {k: v[0] for k, v in self.model.live.items()}, "one live key per source, as the model"
        originals = {r.id for r in rows if r.verdict == "accepted"}
        for r in rows:
            if r.verdict == "duplicate":
                assert r.duplicate_of in originals and r.id not in jobs, "a duplicate is never processed"
            else:
                assert r.verdict == "accepted" and r.id in jobs


def test_dedupe_state_machine(db_url: str, tmp_path: Path) -> None:
    Store(make_settings(db_url, tmp_path).effective_database_url).migrate()

    class Machine(DedupeMachine):
        URL = db_url
        TMP = tmp_path

    run_state_machine_as_test(Machine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=12, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
