"""The profile store's PostgreSQL-only key lookup (one statement, an index probe per key) on a real
PostgreSQL (issue #19: the mutation run of ``store/profiles.py`` runs it besides the SQLite tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from hookbay.store import Store
from hookbay.store import profiles as ps
from tests.conftest import drop_pg_database, make_pg_database


@pytest.fixture(scope="module")
def engine(pg_ok: None) -> Iterator[sa.Engine]:
    name, url = make_pg_database()
    store = Store(url)
    store.migrate()
    store.read_engine.dispose()
    try:
        yield store.write_engine
    finally:
        store.write_engine.dispose()
        drop_pg_database(name)


def test_keys_are_found_per_client_and_kind_and_missing_ones_are_left_out(engine: sa.Engine) -> None:
    items = [{"client_id": client, "contact": contact, "consents": [], "at": i, "request_id": f"r{i}",
              "source_id": None} for i, (client, contact) in enumerate([
                  ("c1", {"email": "a@x.io", "phone": "+111"}), ("c1", {"email": "b@x.io"}),
                  ("c2", {"email": "a@x.io"})])]
    with engine.begin() as conn:
        p1, p2, p3 = ps.apply_contacts(conn, items, 1)
        assert ps.lookup_keys(conn, set()) == {}
        found = ps.lookup_keys(conn, {("c1", "email", "a@x.io"), ("c1", "phone", "+111"), ("c1", "email", "b@x.io"),
                                      ("c2", "email", "a@x.io"), ("c2", "email", "b@x.io"), ("c1", "phone", "a@x.io")})
    assert found == {("c1", "email", "a@x.io"): p1, ("c1", "phone", "+111"): p1, ("c1", "email", "b@x.io"): p2,
                     ("c2", "email", "a@x.io"): p3}
    assert len({p1, p2, p3}) == 3
    # the matched profiles are read back (and locked), merged, updated, and a replay adds no event twice
    again = [{**items[0], "contact": {"email": "b@x.io", "phone": "+111", "name": "Ann"}, "at": 5,
              "request_id": "r5", "consents": [{"channel": "email", "granted": True, "field": "opt_in"}]}]
    for _ in range(2):
        with engine.begin() as conn:
            assert ps.apply_contacts(conn, again, 2) == [p1]
    with engine.begin() as conn:
        assert ps.lookup_keys(conn, {("c1", "email", "b@x.io")}) == {("c1", "email", "b@x.io"): p1}
        assert conn.exec_driver_sql("SELECT merged_id, survivor_id, client_id, request_id, merged_at "
                                    "FROM profile_merges").all() == [(p2, p1, "c1", "r5", 5)]
        assert conn.exec_driver_sql("SELECT profile_id, client_id, channel, granted, occurred_at, source_id, "
                                    "request_id, field FROM consent_events").all() == [
            (p1, "c1", "email", True, 5, None, "r5", "opt_in")]
        assert conn.exec_driver_sql("SELECT email, phone, updated_at FROM profiles WHERE id = %s",
                                    (p1,)).one() == ("b@x.io", "+111", 2)  # the latest email
