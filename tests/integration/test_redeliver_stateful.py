"""Re-run actions (ops.rerun.redeliver) against a reference model, on SQLite and PostgreSQL: whatever
ids a form names, only finished deliveries (dead, skipped, succeeded) of the request in the URL and
of the caller's client are queued again; another client's request is a 404; nothing else moves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from hookbay.errors import BadRequest, NotFound
from hookbay.ids import new_source_id, now_us, ulid
from hookbay.ops.access import Principal
from hookbay.ops.rerun import RERUNNABLE, redeliver
from hookbay.store import Store
from hookbay.store.schema import deliveries as D
from hookbay.store.schema import requests as R
from tests.integration.test_request_search import _row, _url

STATES = ("pending", "running", "succeeded", "dead", "skipped")
CLIENTS = ("acme", "globex")


def test_redeliver_follows_a_reference_model(db_url: str) -> None:
    store = Store(_url(db_url))
    store.migrate()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.start())  # the group-commit writer that store writes go through

    class Machine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            """Two requests of acme and one of globex, each with three deliveries."""
            self.req_client: dict[str, str] = {}
            self.model: dict[str, dict[str, Any]] = {}  # delivery id -> request, client, state
            now = now_us()

            def insert(c: sa.Connection) -> None:
                for client in ("acme", "acme", "globex"):
                    row = {**_row(new_source_id(), b"{}", []), "client_id": client}
                    c.execute(R.insert(), row)
                    self.req_client[row["id"]] = client
                    for i in range(3):
                        did = "dlv_" + ulid()
                        c.execute(D.insert(), {
                            "id": did, "request_id": row["id"], "record_idx": 0, "action_idx": i,
                            "source_id": row["source_id"], "client_id": client, "action_type": "forward",
                            "action_name": "crm", "destination": "http:example.com:443", "state": "dead",
                            "attempts": 3, "run_after": now, "created_at": now, "updated_at": now})
                        self.model[did] = {"request": row["id"], "client": client, "state": "dead"}

            loop.run_until_complete(store.write(insert))  # through the store's writer, as the app writes

        @rule(data=st.data(), state=st.sampled_from(STATES))
        def move(self, data: st.DataObject, state: str) -> None:
            """The worker (or time) moves a delivery to any state."""
            did = data.draw(st.sampled_from(sorted(self.model)))
            loop.run_until_complete(store.write(
                lambda c: c.execute(D.update().where(D.c.id == did).values(state=state))))
            self.model[did]["state"] = state

        @rule(data=st.data(), client=st.sampled_from((*CLIENTS, None)))
        def rerun(self, data: st.DataObject, client: str | None) -> None:
            rid = data.draw(st.sampled_from(sorted(self.req_client)))
            ids = data.draw(st.lists(st.sampled_from([*sorted(self.model), "dlv_unknown", ""]), max_size=6))
            p = Principal(client)
            if client is not None and self.req_client[rid] != client:
                with pytest.raises(NotFound):
                    loop.run_until_complete(redeliver(store, p, rid, ids))
                return
            if not [i for i in ids if i]:
                with pytest.raises(BadRequest):
                    loop.run_until_complete(redeliver(store, p, rid, ids))
                return
            got = loop.run_until_complete(redeliver(store, p, rid, ids))
            want = {i for i in ids if i in self.model and self.model[i]["request"] == rid
                    and self.model[i]["state"] in RERUNNABLE}
            assert set(got) == want and len(got) == len(want)
            for i in want:
                self.model[i]["state"] = "pending"

        @invariant()
        def states_match(self) -> None:
            rows = dict(loop.run_until_complete(store.read(lambda c: [tuple(r) for r in c.execute(
                sa.select(D.c.id, D.c.state).where(D.c.id.in_(list(self.model))))])))
            assert rows == {i: m["state"] for i, m in self.model.items()}

    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=15, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)))
    finally:
        loop.run_until_complete(store.close())
        loop.close()
