"""Bulk retry (ops.bulk, the console's "retry all matching") against a reference model, on SQLite and
PostgreSQL: a run walked chunk by chunk queues exactly the finished deliveries of the caller's
client that match the filter (dead letters when no state is chosen) and existed when it was
confirmed; deliveries arriving during the run, another client's, and queued or running ones stay
as they are, whatever client the filter names."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from hookbay.ids import new_source_id, now_us, ulid
from hookbay.ops import bulk
from hookbay.ops.access import Principal
from hookbay.store import Store
from hookbay.store.deliveries import DeliveryFilter
from hookbay.store.schema import deliveries as D
from hookbay.store.schema import requests as R
from tests.integration.test_request_search import _row, _url

STATES = ("pending", "running", "succeeded", "dead", "skipped")
CLIENTS = ("acme", "globex")


def test_bulk_retry_follows_a_reference_model(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 2)  # several chunks per run
    store = Store(_url(db_url))
    store.migrate()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.start())
    sources = {c: [new_source_id(), new_source_id()] for c in CLIENTS}

    class Machine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.model: dict[str, dict[str, Any]] = {}  # delivery id -> client, source, state

            # every example starts without deliveries (the requests stay: the search index keeps them)
            loop.run_until_complete(store.write(lambda c: c.execute(D.delete())))
            for client in CLIENTS:
                for src in sources[client]:
                    self._add(client, src, "dead")

        def _add(self, client: str, src: str, state: str) -> str:
            did, now = "dlv_" + ulid(), now_us()

            def insert(c: sa.Connection) -> None:
                row = {**_row(src, b"{}", []), "client_id": client}
                c.execute(R.insert(), row)
                c.execute(D.insert(), {
                    "id": did, "request_id": row["id"], "record_idx": 0, "action_idx": 0, "source_id": src,
                    "client_id": client, "action_type": "forward", "action_name": "crm",
                    "destination": "http:example.com:443", "state": state, "attempts": 3, "run_after": now,
                    "created_at": now, "updated_at": now})

            loop.run_until_complete(store.write(insert))
            self.model[did] = {"client": client, "source": src, "state": state}
            return did

        @rule(client=st.sampled_from(CLIENTS), which=st.integers(0, 1), state=st.sampled_from(STATES))
        def arrive(self, client: str, which: int, state: str) -> None:
            self._add(client, sources[client][which], state)

        @rule(data=st.data(), state=st.sampled_from(STATES))
        def move(self, data: st.DataObject, state: str) -> None:
            did = data.draw(st.sampled_from(sorted(self.model)))
            loop.run_until_complete(store.write(
                lambda c: c.execute(D.update().where(D.c.id == did).values(state=state))))
            self.model[did]["state"] = state

        @rule(caller=st.sampled_from((*CLIENTS, None)), named=st.sampled_from((*CLIENTS, None)),
              source=st.sampled_from((None, 0, 1)), state=st.sampled_from((None, *STATES)))
        def retry_all(self, caller: str | None, named: str | None, source: int | None, state: str | None) -> None:
            """A run confirmed now, with a delivery arriving after every chunk; the filter may name
            any client (as a forged form would), the principal decides."""
            p = Principal(caller)
            src = sources[named or caller or "acme"][source] if source is not None else None
            flt = DeliveryFilter(client_id=named, source_id=src, state=state, until_us=now_us())
            count = loop.run_until_complete(bulk.count_deliveries(store, p, flt))
            want = {i for i, m in self.model.items()
                    if (caller is None or m["client"] == caller) and (src is None or m["source"] == src)
                    and m["state"] == (state or "dead") and m["state"] in bulk.RERUNNABLE}
            assert count == len(want)
            queued: set[str] = set()
            cursor: str | None = None
            for _ in range(100):
                step = loop.run_until_complete(bulk.delivery_chunk(store, p, flt, cursor))
                assert step.changed + step.skipped == step.handled
                self._add(caller or "acme", sources[caller or "acme"][0], state or "dead")  # arrives mid-run
                cursor = step.cursor
                if cursor is None:
                    break
            rows = loop.run_until_complete(store.read(lambda c: [tuple(r) for r in c.execute(
                sa.select(D.c.id, D.c.state).where(D.c.id.in_(list(want))))]))
            queued = {i for i, s in rows if s == "pending"}
            assert queued == want
            for i in want:
                self.model[i]["state"] = "pending"

        @invariant()
        def states_match(self) -> None:
            rows = dict(loop.run_until_complete(store.read(lambda c: [tuple(r) for r in c.execute(
                sa.select(D.c.id, D.c.state).where(D.c.id.in_(list(self.model))))])))
            assert rows == {i: m["state"] for i, m in self.model.items()}

    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=15, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        loop.run_until_complete(store.close())
        loop.close()
