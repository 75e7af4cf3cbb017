"""Profiles in the database (``store/profiles.py``) against a reference model, on real SQLite
(issue #19: fast tests the mutation run of the profile store can use; the end-to-end profile tests
go through a live server).

The model applies contacts one at a time: a contact joins the profile that holds one of its
identity keys (email, phone; per client), several such profiles merge into the oldest, keyless
contacts get no profile. It keeps each profile's keys, its latest name, email and phone, its consent
ledger (one event per request and channel, the first one wins, also across a merge) and its
records. Batches of contacts go to :func:`apply_contacts` as the worker sends them; after each,
the database must hold exactly the model's profiles, with the ids the model expects (a profile
keeps its id; a merged-away id leads to its survivor), and ids of one batch in creation order."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from hookbay.profiles import identity_keys
from hookbay.store import Store, merges, schema
from hookbay.store import profiles as ps
from hookbay.store.errors import ConcurrentChange

CLIENTS = ("c1", "c2")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "template.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.read_engine.dispose()
    store.write_engine.dispose()
    return path


@dataclass(eq=False)
class MP:
    """A profile of the model."""

    client: str
    born: int
    keys: set[tuple[str, str]] = field(default_factory=set)
    dbid: str | None = None
    batch: int = 0
    latest: dict[str, tuple[int, str]] = field(default_factory=dict)  # name/email/phone/mobile: (at, value)
    events: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)  # (request, channel): (seq, granted)
    records: set[str] = field(default_factory=set)
    into: MP | None = None  # merged into this one


contacts = st.fixed_dictionaries({
    "client": st.sampled_from(CLIENTS),
    "email": st.sampled_from([None, "a@x.io", "A@X.io", "b@x.io", "c@x.io"]),
    "phone": st.sampled_from([None, "+111", "+222"]),
    "mobile": st.sampled_from([None, "+222", "+333"]),
    "name": st.sampled_from([None, "Ann", "Bo", "Cy"]),
    "consents": st.lists(st.tuples(st.sampled_from(["email", "sms"]), st.booleans()), max_size=2),
    "same_request": st.booleans(),  # shares the previous contact's request id
})


def machine(path: Path) -> type[RuleBasedStateMachine]:
    class Profiles(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            db = path.with_name(f"run{next(counter)}.db")
            shutil.copyfile(path, db)
            self.engine = sa.create_engine(f"sqlite:///{db}")
            self.live: list[MP] = []
            self.gone: dict[str, MP] = {}  # merged-away id -> the model profile it went into
            self.merges = 0
            self.seq = itertools.count(1)
            self.batches = 0
            self.rid = 0

        def teardown(self) -> None:
            self.engine.dispose()

        def _holder(self, client: str, keys: list[tuple[str, str]]) -> MP | None:
            found = [p for p in self.live if p.client == client and p.keys & set(keys)]
            if not found:
                return None
            survivor = min(found, key=lambda p: p.born)
            for other in found:
                if other is not survivor:
                    self.merges += 1
                    survivor.keys |= other.keys
                    survivor.records |= other.records
                    for name, (at, value) in other.latest.items():
                        if name not in survivor.latest or at > survivor.latest[name][0]:
                            survivor.latest[name] = (at, value)
                    for k, ev in other.events.items():
                        if k not in survivor.events or ev[0] < survivor.events[k][0]:
                            survivor.events[k] = ev
                    other.into = survivor
                    if other.dbid is not None:
                        self.gone[other.dbid] = survivor
                    for merged, into in self.gone.items():
                        if into is other:
                            self.gone[merged] = survivor
                    self.live.remove(other)
            return survivor

        @rule(batch=st.lists(contacts, min_size=1, max_size=6))
        def apply(self, batch: list[dict[str, Any]]) -> None:
            self.batches += 1
            now = self.batches * 1_000_000
            items, holders = [], []
            for c in batch:
                at = next(self.seq)
                if not (c["same_request"] and items):
                    self.rid += 1
                rid = f"req_{self.rid}"
                contact = {k: c[k] for k in ("email", "phone", "mobile", "name") if c[k] is not None}
                consents = [{"channel": ch, "granted": g} for ch, g in c["consents"]]
                items.append({"client_id": c["client"], "contact": contact, "consents": consents, "at": at,
                              "request_id": rid, "source_id": "src_1"})
                keys = identity_keys(contact)
                if not keys:
                    holders.append(None)
                    continue
                p = self._holder(c["client"], keys)
                if p is None:
                    p = MP(c["client"], at, batch=self.batches)
                    self.live.append(p)
                p.keys |= set(keys)
                for name, value in contact.items():
                    p.latest[name] = (at, value)
                for ch, granted in c["consents"]:
                    p.events.setdefault((rid, ch), (at, granted))
                p.records.add(f"{rid}/{at}")
                holders.append(p)
            with self.engine.begin() as conn:
                got = ps.apply_contacts(conn, items, now)
                conn.execute(sa.insert(schema.records), [
                    {"request_id": it["request_id"], "idx": it["at"], "source_id": "src_1", "client_id": it["client_id"],
                     "parser": "t", "parser_version": "1", "data": "{}", "profile_id": pid, "created_at": now}
                    for it, pid in zip(items, got, strict=True)])
                owner = {(c, k, v): pid for c, k, v, pid in conn.execute(sa.text(
                    "SELECT client_id, kind, value, profile_id FROM profile_keys"))}
            for p in self.live:
                ids = {owner.get((p.client, *k)) for k in p.keys}
                assert len(ids) == 1 and None not in ids, (p, ids)
                (dbid,) = ids
                assert p.dbid in (None, dbid), "a profile changed its id (the older one must survive)"
                p.dbid = dbid
            assert got == [None if h is None else self._final(h).dbid for h in holders]
            fresh = sorted((p for p in self.live if p.batch == self.batches), key=lambda p: p.born)
            assert [p.dbid for p in fresh] == sorted(p.dbid for p in fresh if p.dbid)  # creation order

        @staticmethod
        def _final(p: MP) -> MP:
            while p.into is not None:
                p = p.into
            return p

        @precondition(lambda self: any(p.dbid in {g.dbid for g in self.gone.values()} for p in self.live))
        @rule(data=st.data())
        def forget_trail(self, data: st.DataObject) -> None:
            """Erasure drops the merge trail that leads to a profile."""
            into = {g.dbid for g in self.gone.values()}
            p = data.draw(st.sampled_from([p for p in self.live if p.dbid in into]))
            with self.engine.begin() as conn:
                trail = set(merges.merged_from(conn, p.dbid))
                assert {m for m, g in self.gone.items() if g is p} <= trail
                assert merges.forget_merges(conn, p.dbid) == len(trail)
                assert merges.merged_from(conn, p.dbid) == []
                for m in trail:
                    assert merges.resolve_profile_id(conn, m) == m
            self.merges -= len(trail)
            self.gone = {m: g for m, g in self.gone.items() if g is not p}

        @invariant()
        def database_matches_the_model(self) -> None:
            with self.engine.connect() as conn:
                rows = {r.id: r for r in conn.execute(sa.text(
                    "SELECT id, client_id, email, phone, fields FROM profiles"))}
                events: dict[str, set[tuple[str, str, bool]]] = {}
                for pid, rid, ch, granted in conn.execute(sa.text(
                        "SELECT profile_id, request_id, channel, granted FROM consent_events")):
                    events.setdefault(pid, set()).add((rid, ch, bool(granted)))
                records: dict[str | None, set[str]] = {}
                for pid, rid, idx in conn.execute(sa.text("SELECT profile_id, request_id, idx FROM records")):
                    records.setdefault(pid, set()).add(f"{rid}/{idx}")
                assert conn.execute(sa.text("SELECT count(*) FROM profile_merges")).scalar() == self.merges
                for merged, into in self.gone.items():
                    assert merges.resolve_profile_id(conn, merged) == into.dbid
                    assert merged in merges.merged_from(conn, into.dbid)
            assert set(rows) == {p.dbid for p in self.live}
            for p in self.live:
                assert p.dbid is not None
                row = rows[p.dbid]
                fields = orjson.loads(row.fields)
                assert row.client_id == p.client
                assert row.email == p.latest.get("email", (0, None))[1]
                assert row.phone == (p.latest.get("phone") or p.latest.get("mobile") or (0, None))[1]
                assert {n: f["value"] for n, f in fields.items()} == {n: v for n, (_, v) in p.latest.items()}
                assert events.get(p.dbid, set()) == {(rid, ch, g) for (rid, ch), (_, g) in p.events.items()}
                assert records.get(p.dbid, set()) == p.records

    counter = itertools.count()
    return Profiles


def test_profiles_follow_the_reference_model(template: Path) -> None:
    run_state_machine_as_test(machine(template), settings=settings(
        max_examples=min(30, settings.default.max_examples), stateful_step_count=6, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow]))


def test_lookups_of_many_keys_find_every_one(template: Path, tmp_path: Path) -> None:
    """More keys of one client and kind than one IN list takes (500)."""
    db = tmp_path / "hb.db"
    shutil.copyfile(template, db)
    engine = sa.create_engine(f"sqlite:///{db}")
    items = [{"client_id": "c1", "contact": {"email": f"u{i}@x.io"}, "consents": [], "at": i, "request_id": f"r{i}",
              "source_id": None} for i in range(1200)]
    with engine.begin() as conn:
        first = ps.apply_contacts(conn, items, 1)
    with engine.begin() as conn:
        again = ps.apply_contacts(conn, [{**it, "at": it["at"] + 5000} for it in items], 2)
        assert ps.lookup_keys(conn, set()) == {}
        found = ps.lookup_keys(conn, {("c1", "email", f"u{i}@x.io") for i in range(1200)} | {("c2", "email", "u1@x.io")})
    engine.dispose()
    assert again == first and len(set(first)) == 1200
    assert found == {("c1", "email", f"u{i}@x.io"): pid for i, pid in enumerate(first)}
    assert first == sorted(first)  # created in order: ids increase


def test_ids_of_one_batch_increase_even_within_one_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next id after the last one carries like a base-32 number."""
    draws = iter(["01H0000000000000000000000Z", "01H0000000000000000000000Z", "01H00000000000000000000000",
                  "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01H00000000000000000000000"])
    monkeypatch.setattr(ps, "ulid", lambda: next(draws))
    ids = ps._Ids()
    assert [ids() for _ in range(5)] == ["prf_01H0000000000000000000000Z", "prf_01H00000000000000000000010",
                                         "prf_01H00000000000000000000011", "prf_7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
                                         "prf_80000000000000000000000000"]


def _contact(at: int, rid: str, consent: bool = False, **contact: str) -> dict[str, Any]:
    return {"client_id": "c1", "contact": contact, "at": at, "request_id": rid, "source_id": "src_1",
            "consents": [{"channel": "email", "granted": True}] if consent else []}


def test_merges_keep_other_profiles_events_and_the_trail_lists_every_merge_oldest_first(
        template: Path, tmp_path: Path) -> None:
    """Profiles A, B, C hold one request's consent each; D and F are merged in by phone. A merge
    deletes only the loser's copy of an event, never a third profile's; A's trail reaches F through C."""
    db = tmp_path / "hb.db"
    shutil.copyfile(template, db)
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            a, b, c, d, f = ps.apply_contacts(conn, [
                _contact(1, "r1", True, email="a@x.io"), _contact(2, "r1", True, phone="+111"),
                _contact(3, "r1", True, email="c@x.io"), _contact(4, "r0", phone="+222"),
                _contact(5, "r5", phone="+333")], 1_000_000)
        for at, keys in ((10, {"email": "a@x.io", "phone": "+222"}), (20, {"email": "a@x.io", "phone": "+111"}),
                         (30, {"email": "c@x.io", "phone": "+333"}), (40, {"email": "c@x.io", "phone": "+111"})):
            with engine.begin() as conn:
                assert ps.apply_contacts(conn, [_contact(at, f"r{at}", **keys)], at * 100_000)[0] == (
                    a if at != 30 else c)
                held = sorted(r[0] for r in conn.execute(sa.text(
                    "SELECT profile_id FROM consent_events WHERE request_id = 'r1'")))
                # B's copy of r1 goes when B merges into A (A's is older); C keeps its own until it merges
                assert held == ([a, b, c] if at == 10 else [a, c] if at in (20, 30) else [a])
        with engine.begin() as conn:
            assert merges.merged_from(conn, a) == [d, b, f, c]  # f through c
            assert merges.forget_merges(conn, a) == 4 and merges.forget_merges(conn, a) == 0
            # a profile new in this batch and a stored one merge: the stored one is older
            assert ps.apply_contacts(conn, [_contact(50, "r50", phone="+444"),
                                            _contact(51, "r51", phone="+444", email="a@x.io")], 5_000_000) == [a, a]
    finally:
        engine.dispose()


def test_the_older_profile_survives_a_replay_changes_nothing_twice_and_provenance_is_kept(
        template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = (f"01H{n:023d}" for n in itertools.count(1))
    monkeypatch.setattr(ps, "ulid", lambda: next(draws))  # ids increase with every profile made
    db = tmp_path / "hb.db"
    shutil.copyfile(template, db)
    engine = sa.create_engine(f"sqlite:///{db}")
    optin = [{"channel": "email", "granted": True, "field": "opt_in"}]

    def profile(conn: sa.Connection, pid: str) -> tuple[Any, ...]:
        return tuple(conn.execute(sa.text("SELECT phone, fields, updated_at FROM profiles WHERE id = :id"),
                                  {"id": pid}).one())

    try:
        with engine.begin() as conn:
            (a,) = ps.apply_contacts(conn, [{**_contact(1, "r1", email="a@x.io"), "consents": optin}], 2_000_000)
            b_item = _contact(2, "r2", phone="+111")
            del b_item["consents"]  # a contact without consents
            (b,) = ps.apply_contacts(conn, [b_item], 1_000_000)  # made later, but dated earlier
            assert orjson.loads(profile(conn, a)[1])["email"] == {"value": "a@x.io", "at": 1, "request_id": "r1",
                                                                   "source_id": "src_1"}
            assert conn.execute(sa.text("SELECT field FROM consent_events")).all() == [("opt_in",)]
            # the older by created_at survives, whatever the ids' order
            assert ps.apply_contacts(conn, [_contact(3, "r3", email="a@x.io", phone="+111")], 3_000_000) == [b]

            c, d = ps.apply_contacts(conn, [_contact(4, "r4", True, email="c@x.io"), _contact(5, "r4", phone="+222")],
                                     4_000_000)
            # request r4 again, one contact: it merges d into c and says nothing new about c itself
            assert ps.apply_contacts(conn, [_contact(5, "r4", True, email="c@x.io", phone="+222")], 5_000_000) == [c]
            assert profile(conn, c)[0] == "+222" and profile(conn, c)[2] == 5_000_000
            assert conn.execute(sa.text("SELECT count(*) FROM consent_events WHERE request_id = 'r4'")).scalar() == 1
            assert ps.apply_contacts(conn, [_contact(5, "r4", email="c@x.io")], 6_000_000) == [c]
            assert profile(conn, c)[2] == 5_000_000  # nothing changed: not written
    finally:
        engine.dispose()


def test_a_profile_or_key_changed_by_another_worker_meanwhile_asks_for_a_retry(
        template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "hb.db"
    shutil.copyfile(template, db)
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO profile_keys (client_id, kind, value, profile_id) "
                                 "VALUES ('c1', 'email', 'gone@x.io', 'prf_gone')"))
            with pytest.raises(ConcurrentChange, match="merged away meanwhile"):
                ps.apply_contacts(conn, [_contact(1, "r1", email="gone@x.io")], 1)
        with engine.begin() as conn:
            ps.apply_contacts(conn, [_contact(2, "r2", email="a@x.io")], 2)
        monkeypatch.setattr(ps, "lookup_keys", lambda conn, triples: {})  # the key was made after the lookup
        with engine.begin() as conn:
            with pytest.raises(ConcurrentChange, match="created meanwhile by another worker"):
                ps.apply_contacts(conn, [_contact(3, "r3", email="a@x.io")], 3)
    finally:
        engine.dispose()
