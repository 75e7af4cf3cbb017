"""Identity rules proven over random sequences of traffic: a hypothesis state machine sends batches
of overlapping contacts (emails in mixed case, phones in several formats, three sources,
permissions true/false/absent, events arriving out of order) and erasures through the real
ingest writer, worker and store, on SQLite and PostgreSQL, and after every step compares every
profile, key, field with its provenance, ledger and consent state with tests/models/identity.py.

A second test races two workers (two stores, as two processes would) on PostgreSQL over
overlapping keys and checks the order-independent outcome: one profile per connected set of keys,
the latest value of each field, every consent event, nothing pending.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from hookbay.errors import NotFound
from hookbay.ids import new_request_id
from hookbay.parsers import contact as contact_parser
from hookbay.processing.worker import Worker
from hookbay.store import Store, schema
from hookbay.store.sources import SourceCache
from tests.conftest import make_settings
from tests.models.identity import Event, IdentityModel, Profile, canonical_fields

EXAMPLES = int(os.environ.get("HOOKBAY_STATEFUL_EXAMPLES", "20"))
STEPS = int(os.environ.get("HOOKBAY_STATEFUL_STEPS", "12"))

EMAILS = ["ann@x.co", "bob@x.co", "cy@y.org", "di@y.org", "eve@z.net"]
PHONES = ["3035550101", "3035550102", "3035550103", "3035550104", "3035550105"]
T0 = 1_750_000_000_000_000


def _phone_text(digits: str, style: int) -> str:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return [f"+1{digits}", f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}"][style]


def _email_text(email: str, style: int) -> str:
    local, domain = email.split("@")
    return [email, email.upper(), f"{local.capitalize()}@{domain.upper()}"][style]


contact_specs = st.fixed_dictionaries({
    "email": st.one_of(st.none(), st.tuples(st.sampled_from(EMAILS), st.integers(0, 2))),
    "phone": st.one_of(st.none(), st.tuples(st.sampled_from(PHONES), st.integers(0, 3))),
    "mobile": st.one_of(st.none(), st.tuples(st.sampled_from(PHONES), st.integers(0, 3))),
    "first": st.one_of(st.none(), st.sampled_from(["Ann", "Bob", "Cy"])),
    "city": st.one_of(st.none(), st.sampled_from(["Oslo", "Lima"])),
    "interests": st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=2, unique=True),
    "email_ok": st.sampled_from([None, True, False]),
    "sms_ok": st.sampled_from([None, True, False]),
    "source": st.integers(0, 2),
    "offset_ms": st.integers(-3000, 3000),  # event times out of arrival order
})


def body_of(spec: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"SourceName": f"src{spec['source']}", "SourceType": "t"}
    if spec["email"]:
        body["Email"] = _email_text(*spec["email"])
    if spec["phone"]:
        body["Phone"] = _phone_text(*spec["phone"])
    if spec["mobile"]:
        body["Mobile"] = _phone_text(*spec["mobile"])
    if spec["first"]:
        body["FirstName"] = spec["first"]
    if spec["city"]:
        body["Address"] = {"City": spec["city"]}
    if spec["interests"]:
        body["Interests"] = spec["interests"]
    if spec["email_ok"] is not None:
        body["EmailPermission"] = spec["email_ok"]
    if spec["sms_ok"] is not None:
        body["SMSPermission"] = spec["sms_ok"]
    return body


def request_row(source_id: str, client_id: str, body: bytes, at: int) -> dict[str, Any]:
    return {"id": new_request_id(), "source_id": source_id, "client_id": client_id, "received_at": at,
            "method": "POST", "path": "/", "query": "", "headers": "[]", "peer": None,
            "content_type": "application/json", "body": body, "body_size": len(body), "verdict": "accepted",
            "rule": None, "status": 200, "state": "pending", "idempotency_key": None, "duplicate_of": None,
            "receipt": None, "processed_at": None}


def system_snapshot(conn: sa.Connection, client_id: str) -> tuple[dict[frozenset[tuple[str, str]], dict[str, Any]],
                                                                   dict[str, frozenset[tuple[str, str]]]]:
    """The system's profiles of one client in the model's shape, and each profile id's key set."""
    P, PK, CE, REC = schema.profiles, schema.profile_keys, schema.consent_events, schema.records
    keys: dict[str, set[tuple[str, str]]] = {}
    for kind, value, pid in conn.execute(sa.select(PK.c.kind, PK.c.value, PK.c.profile_id)
                                         .where(PK.c.client_id == client_id)):
        keys.setdefault(pid, set()).add((kind, value))
    fields = {pid: orjson.loads(f) for pid, f in conn.execute(
        sa.select(P.c.id, P.c.fields).where(P.c.client_id == client_id))}
    assert set(fields) == set(keys), "every profile has keys and every key a profile"
    ledgers: dict[str, list[tuple[Any, ...]]] = {}
    for row in conn.execute(sa.select(CE.c.profile_id, CE.c.channel, CE.c.granted, CE.c.occurred_at,
                                      CE.c.request_id, CE.c.source_id, CE.c.id).where(CE.c.client_id == client_id)):
        ledgers.setdefault(row[0], []).append(tuple(row[1:]))
    requests: dict[str, set[str]] = {}
    for rid, pid in conn.execute(sa.select(REC.c.request_id, REC.c.profile_id)
                                 .where(REC.c.client_id == client_id, REC.c.profile_id.is_not(None))):
        requests.setdefault(pid, set()).add(rid)
    out = {}
    ids = {}
    for pid, ks in keys.items():
        ledger = ledgers.get(pid, [])
        state: dict[str, bool] = {}
        for e in sorted(ledger, key=lambda e: (e[2], e[5])):
            state[e[0]] = bool(e[1])
        out[frozenset(ks)] = {
            "fields": canonical_fields(fields[pid]),
            "ledger": sorted((c, bool(g), at, r, s) for c, g, at, r, s, _ in ledger),
            "consent": state,
            "requests": requests.get(pid, set()),
        }
        ids[pid] = frozenset(ks)
    return out, ids


class IdentityMachine(RuleBasedStateMachine):
    """Subclassed per test with URL set to the test's database."""

    URL = ""
    TMP = Path(".")
    WORKERS = 1

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client_id = "c_" + uuid.uuid4().hex[:12]
        self.model = IdentityModel()
        self.sys_id: dict[int, str] = {}  # model profile id -> the system's id, fixed once seen
        self.clock = itertools.count(1)
        self.sent: list[str] = []
        settings = make_settings(self.URL, self.TMP, worker_batch=100, worker_yield_ratio=0)
        self.store = Store(settings.effective_database_url)
        self.run(self.store.start())
        self.sources = [self.run(self.store.create_source(
            name=f"s{i}", client_id=self.client_id, config={"parser": "contact", "default_region": "US"}))[0]
            for i in range(3)]
        self.cache = SourceCache(self.store, 1 << 20)
        self.run(self.cache.reload())
        self.worker = Worker(self.store, self.cache, settings, worker_id="w-" + self.client_id)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()

    @rule(specs=st.lists(contact_specs, min_size=1, max_size=4))
    def send(self, specs: list[dict[str, Any]]) -> None:
        """Contacts arrive; the worker then takes them as one batch, oldest event first."""
        rows = []
        for spec in specs:
            raw = orjson.dumps(body_of(spec))
            at = T0 + next(self.clock) * 10_000_000 + spec["offset_ms"] * 1000 + next(self.clock)
            row = request_row(self.sources[spec["source"]].id, self.client_id, raw, at)
            rows.append((row, raw))
        for row, _ in rows:
            self.run(self.store.writer.ingest(row))
            self.sent.append(row["id"])
        while self.run(self.worker.run_once()):
            pass
        for row, raw in sorted(rows, key=lambda r: r[0]["received_at"]):
            parsed = contact_parser.parse([orjson.loads(raw)], default_region="US")
            for rec in parsed.records:
                self.model.apply(rec["contact"], rec.get("consents", []), row["received_at"], row["id"],
                                 row["source_id"])

    @rule(kind=st.sampled_from(["malformed", "no_keys", "not_an_object", "empty"]), source=st.integers(0, 2))
    def send_bad(self, kind: str, source: int) -> None:
        """Requests that cannot become a profile still end ``failed`` or ``processed``, never pending."""
        raw = {"malformed": b'{"Email": "ann@x.co", ', "no_keys": b'{"FirstName": "Nobody"}',
               "not_an_object": b'[1, 2, 3]', "empty": b""}[kind]
        row = request_row(self.sources[source].id, self.client_id, raw, T0 + next(self.clock) * 10_000_000)
        self.run(self.store.writer.ingest(row))
        while self.run(self.worker.run_once()):
            pass
        got = self.run(self.store.get_request(row["id"]))
        assert got.state in ("processed", "failed")
        if got.state == "failed":
            assert orjson.loads(got.receipt)["errors"], "a failed request says why"
        for rec in contact_parser.parse([orjson.loads(raw)] if kind in ("no_keys",) else [], default_region="US").records:
            self.model.apply(rec["contact"], rec.get("consents", []), row["received_at"], row["id"], row["source_id"])

    @precondition(lambda self: bool(self.model.profiles))
    @rule(data=st.data())
    def erase(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.model.profiles)))
        self.run(self.store.erase_profile(self.sys_id[pid], None, "test"))
        self.model.erase(pid)

    @invariant()
    def matches_model(self) -> None:
        snap, ids = self.run(self.store.read(lambda conn: system_snapshot(conn, self.client_id)))
        expected = self.model.snapshot()
        assert set(snap) == set(expected), "profiles partition the keys as the model does"
        for keys, want in expected.items():
            assert snap[keys] == want, f"profile with keys {sorted(keys)}"
        by_keys = {ks: pid for pid, ks in ids.items()}
        for mid, prof in self.model.profiles.items():
            some_key = next(k for k, p in self.model.keys.items() if p == mid)
            sid = next(pid for ks, pid in by_keys.items() if some_key in ks)
            assert self.sys_id.setdefault(mid, sid) == sid, "a profile keeps its id; the older one survives merges"
            assert prof.requests == snap[by_keys_inv(by_keys, sid)]["requests"]
        for merged in self.model.merged:
            survivor = self.model.survivor_of(merged)
            if merged in self.sys_id and survivor is not None:
                got = self.run(self.store.get_profile(self.sys_id[merged]))
                assert got.id == self.sys_id[survivor], "a merged-away id answers its survivor"

    @invariant()
    def nothing_left_pending(self) -> None:
        R = schema.requests
        pending = self.run(self.store.read(lambda conn: conn.execute(
            sa.select(sa.func.count()).select_from(R).where(R.c.client_id == self.client_id,
                                                            R.c.state == "pending")).scalar()))
        assert pending == 0


def by_keys_inv(by_keys: dict[frozenset[tuple[str, str]], str], sid: str) -> frozenset[tuple[str, str]]:
    return next(ks for ks, pid in by_keys.items() if pid == sid)


def test_identity_rules_match_the_model(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    Store(settings.effective_database_url).migrate()

    class Machine(IdentityMachine):
        URL = db_url
        TMP = tmp_path

    run_state_machine_as_test(Machine, settings=hsettings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=list(HealthCheck)))


# --- two workers racing on PostgreSQL ----------------------------------------------------------


def expected_components(contacts: list[tuple[dict[str, Any], list[dict[str, Any]], int, str, str]]
                        ) -> dict[frozenset[tuple[str, str]], dict[str, Any]]:
    """The outcome that does not depend on processing order: keys that ever shared a contact form
    one profile; each scalar field holds its latest value; sets are unions; the ledger has every
    event; consent per channel is the latest event's."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(k: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    for c, *_ in contacts:
        ks = IdentityModel.keys_of(c)
        for k in ks[1:]:
            parent[find(k)] = find(ks[0])
        if ks:
            find(ks[0])
    groups: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for k in list(parent):
        groups.setdefault(find(k), set()).add(k)
    out = {}
    for root, ks in groups.items():
        members = [x for x in contacts if IdentityModel.keys_of(x[0]) and find(IdentityModel.keys_of(x[0])[0]) == root]
        solo = IdentityModel()
        for c, consents, at, rid, sid in sorted(members, key=lambda m: m[2]):
            for k in IdentityModel.keys_of(c):  # one profile: apply all in event order
                solo.keys[k] = 1
            solo.profiles.setdefault(1, Profile(1))
            solo._set_fields(solo.profiles[1], c, at, rid, sid)
            solo.profiles[1].requests.add(rid)
            for cons in consents:
                solo.profiles[1].ledger.append(Event(0, cons["channel"], bool(cons["granted"]), at, rid, sid))
        p = solo.profiles[1]
        fields = canonical_fields(p.fields)
        out[frozenset(ks)] = {
            "fields": {n: v[0] for n, v in fields.items()},
            "ledger": sorted((e.channel, e.granted, e.at, e.request_id, e.source_id) for e in p.ledger),
            "consent": {e.channel: e.granted for e in sorted(p.ledger, key=lambda e: e.at)},
            "requests": p.requests,
        }
    return out


@given(specs=st.lists(contact_specs, min_size=20, max_size=60))
@hsettings(max_examples=max(3, EXAMPLES // 4), deadline=None, suppress_health_check=list(HealthCheck))
def test_two_workers_racing_agree_with_the_model(pg_db: tuple[str, Path], specs: list[dict[str, Any]]) -> None:
    db_url, tmp_path = pg_db
    asyncio.run(_race(db_url, tmp_path, specs))


async def _race(db_url: str, tmp_path: Path, specs: list[dict[str, Any]]) -> None:
    settings = make_settings(db_url, tmp_path, worker_batch=7, worker_yield_ratio=0)
    url = settings.effective_database_url
    stores = [Store(url), Store(url), Store(url)]
    for s in stores:
        await s.start()
    client_id = "c_" + uuid.uuid4().hex[:12]
    try:
        sources = [(await stores[0].create_source(name=f"s{i}", client_id=client_id,
                                                  config={"parser": "contact", "default_region": "US"}))[0]
                   for i in range(3)]
        contacts = []
        for n, spec in enumerate(specs):
            raw = orjson.dumps(body_of(spec))
            row = request_row(sources[spec["source"]].id, client_id, raw,
                              T0 + n * 10_000_000 + spec["offset_ms"] * 1000 + n)
            await stores[0].writer.ingest(row)
            for rec in contact_parser.parse([orjson.loads(raw)], default_region="US").records:
                contacts.append((rec["contact"], rec.get("consents", []), row["received_at"], row["id"],
                                 row["source_id"]))
        workers = []
        for i, s in enumerate(stores[1:]):
            cache = SourceCache(s, 1 << 20)
            await cache.reload()
            workers.append(Worker(s, cache, settings, worker_id=f"race{i}-{client_id}"))

        async def drain(w: Worker) -> None:
            idle = 0
            while idle < 3:
                idle = 0 if await w.run_once() else idle + 1
                await asyncio.sleep(0.005 * idle)

        await asyncio.wait_for(asyncio.gather(*(drain(w) for w in workers)), 120)
        snap, _ = await stores[0].read(lambda conn: system_snapshot(conn, client_id))
        want = expected_components(contacts)
        got = {ks: {**v, "fields": {n: f[0] for n, f in v["fields"].items()},
                    "consent": v["consent"]} for ks, v in snap.items()}
        assert set(got) == set(want), "one profile per connected set of keys"
        for ks, w in want.items():
            assert got[ks] == w, f"profile with keys {sorted(ks)}"
        R = schema.requests
        pending = await stores[0].read(lambda conn: conn.execute(sa.select(sa.func.count()).select_from(R).where(
            R.c.client_id == client_id, R.c.state.in_(["pending"]))).scalar())
        assert pending == 0
    finally:
        for s in stores:
            await s.close()


@pytest.fixture(scope="module")
def pg_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.conftest import _pg_available, drop_pg_database, make_pg_database

    err = _pg_available()
    if err is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {err}")
        pytest.skip(f"PostgreSQL unavailable: {err}")
    name, url = make_pg_database()
    tmp = tmp_path_factory.mktemp("race")
    Store(make_settings(url, tmp).effective_database_url).migrate()
    try:
        yield url, tmp
    finally:
        drop_pg_database(name)


def test_erased_profile_id_is_gone(db_url: str, tmp_path: Path) -> None:
    """Erasure is final: neither the id nor a merged-away id finds anything afterwards."""
    class One(IdentityMachine):
        URL = db_url
        TMP = tmp_path

    Store(make_settings(db_url, tmp_path).effective_database_url).migrate()
    m = One()
    try:
        m.send([{"email": ("ann@x.co", 0), "phone": None, "mobile": None, "first": "Ann", "city": None,
                 "interests": [], "email_ok": True, "sms_ok": None, "source": 0, "offset_ms": 0},
                {"email": ("bob@x.co", 0), "phone": ("3035550101", 0), "mobile": None, "first": None, "city": None,
                 "interests": [], "email_ok": None, "sms_ok": None, "source": 1, "offset_ms": 0}])
        m.matches_model()
        m.send([{"email": ("ann@x.co", 1), "phone": ("3035550101", 1), "mobile": None, "first": None, "city": None,
                 "interests": ["a"], "email_ok": False, "sms_ok": None, "source": 2, "offset_ms": 0}])
        m.matches_model()
        assert len(m.model.profiles) == 1 and len(m.model.merged) == 1
        merged, survivor = next(iter(m.model.merged.items()))
        m.run(m.store.erase_profile(m.sys_id[survivor], None, "test"))
        for pid in (merged, survivor):
            with pytest.raises(NotFound):
                m.run(m.store.get_profile(m.sys_id[pid]))
    finally:
        m.teardown()
