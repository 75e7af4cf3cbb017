"""Dedupe by what identifies the event (issue #15): ``idempotency_key`` from a header or a JMESPath
over the body, presets, one key per source in the database (also when two servers race on the
same database), and the window (``idempotency_days``) enforced by retention."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from hookbay.ids import now_us

DAY_US = 86_400_000_000


def _requests(live: Any, source_id: str) -> list[dict[str, Any]]:
    with live.admin() as c:
        r = c.get("/api/v1/requests", params={"source": source_id})
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]


def _records(live: Any, rid: str) -> list[dict[str, Any]]:
    with live.admin() as c:
        return c.get(f"/api/v1/requests/{rid}").json()["records"]  # type: ignore[no-any-return]


def test_stripe_preset_dedupes_a_retry_by_the_event_id_in_the_body(live: Any) -> None:
    """Stripe retries an event as a new delivery with the same body ``id`` (and no delivery header)."""
    src = live.create_source(config={"idempotency_key": "stripe"})
    url = f"/V1/Data/{src['token']}"
    event = {"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "type": "customer.created",
             "data": {"object": {"id": "cus_1", "email": "ann@example.com"}}}
    first = live.client.post(url, json=event)
    retry = live.client.post(url, json={**event, "request": {"id": None, "idempotency_key": None}},
                             headers={"Stripe-Signature": "t=1,v1=whatever-differs"})
    other = live.client.post(url, json={**event, "id": "evt_other"})
    assert first.status_code == retry.status_code == other.status_code == 200
    rid = first.json()["request_id"]
    assert retry.json()["request_id"] == rid and other.json()["request_id"] != rid
    live.wait_state(rid)
    live.wait_state(other.json()["request_id"])
    items = _requests(live, src["id"])
    assert sorted(i["verdict"] for i in items) == ["accepted", "accepted", "duplicate"]
    dup = next(i for i in items if i["verdict"] == "duplicate")
    assert dup["duplicate_of"] == rid and dup["state"] == "duplicate"
    time.sleep(0.3)
    assert len(_records(live, rid)) == 1


def test_jmespath_composite_key_adyen_style(live: Any) -> None:
    src = live.create_source(config={"idempotency_key": "body:join('-', [pspReference, eventCode])"})
    url = f"/V1/Data/{src['token']}"
    a = live.client.post(url, json={"pspReference": "7914073381342284", "eventCode": "AUTHORISATION", "n": 1})
    b = live.client.post(url, json={"pspReference": "7914073381342284", "eventCode": "AUTHORISATION", "n": 2})
    c = live.client.post(url, json={"pspReference": "7914073381342284", "eventCode": "CAPTURE", "n": 3})
    assert a.json()["request_id"] == b.json()["request_id"] != c.json()["request_id"]
    # a body without the key is simply not deduplicated (it is no failure)
    d = live.client.post(url, json={"n": 4})
    e = live.client.post(url, json={"n": 4})
    assert d.status_code == e.status_code == 200 and d.json()["request_id"] != e.json()["request_id"]


def test_form_body_key(live: Any) -> None:
    src = live.create_source(config={"idempotency_key": "body:submission_id"})
    url = f"/V1/Data/{src['token']}"
    a = live.client.post(url, data={"submission_id": "s-1", "email": "a@example.com"})
    b = live.client.post(url, data={"submission_id": "s-1", "email": "a@example.com"})
    assert a.status_code == 200 and a.json()["request_id"] == b.json()["request_id"]


def test_header_preset_replaces_the_default_headers(live: Any) -> None:
    """shopify: ``X-Shopify-Webhook-Id`` is the identity; a generic ``Idempotency-Key`` no longer is."""
    src = live.create_source(config={"idempotency_key": "shopify"})
    url = f"/V1/Data/{src['token']}"
    a = live.client.post(url, json={"n": 1}, headers={"X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"})
    b = live.client.post(url, json={"n": 1}, headers={"X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"})
    assert a.json()["request_id"] == b.json()["request_id"]
    c = live.client.post(url, json={"n": 2}, headers={"Idempotency-Key": "k"})
    d = live.client.post(url, json={"n": 2}, headers={"Idempotency-Key": "k"})
    assert c.json()["request_id"] != d.json()["request_id"]


def test_a_long_key_is_hashed_not_truncated(live: Any) -> None:
    src = live.create_source(config={"idempotency_key": "body:id"})
    url = f"/V1/Data/{src['token']}"
    base = "k" * 250
    a = live.client.post(url, json={"id": base + "A"})
    b = live.client.post(url, json={"id": base + "B"})
    again = live.client.post(url, json={"id": base + "A"})
    assert a.json()["request_id"] != b.json()["request_id"]
    assert again.json()["request_id"] == a.json()["request_id"]


def test_two_servers_on_one_database_agree_on_the_original(db_url: str, live_server_factory: Any) -> None:
    """Two servers (each with its own writer and connection, as ``serve --processes 2`` or two machines)
    receive the same event at once: every answer names one request, and one row is the original."""
    one = live_server_factory(db_url)
    two = live_server_factory(db_url)
    src = one.create_source(config={"idempotency_key": "body:id"})
    deadline = time.monotonic() + 10
    while two.client.post(f"/V1/Data/{src['token']}", json={"warm": 1}).status_code == 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ids: list[str] = []
    statuses: list[int] = []
    barrier = threading.Barrier(16)

    def send(base: str) -> None:
        with httpx.Client(base_url=base, timeout=15) as c:
            barrier.wait()
            r = c.post(f"/V1/Data/{src['token']}", json={"id": "evt-race"})
            statuses.append(r.status_code)
            ids.append(r.json().get("request_id", ""))

    threads = [threading.Thread(target=send, args=(s.url,)) for s in (one, two) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 16
    assert len(set(ids)) == 1
    items = [i for i in _requests(one, src["id"]) if i["verdict"] in ("accepted", "duplicate")]
    originals = [i for i in items if i["id"] == ids[0]]
    assert len(originals) == 1 and originals[0]["verdict"] == "accepted"
    assert sum(1 for i in items if i["duplicate_of"] == ids[0]) == 15


@pytest.mark.parametrize("days", [None, 2])
def test_the_window_is_enforced_by_retention(live: Any, days: int | None) -> None:
    cfg: dict[str, Any] = {"idempotency_key": "body:id"}
    if days is not None:
        cfg["idempotency_days"] = days
    window = days or 30
    src = live.create_source(config=cfg)
    url = f"/V1/Data/{src['token']}"
    first = live.client.post(url, json={"id": "evt-1"}).json()["request_id"]
    store = live.app.store
    forgot = asyncio.run(store.forget_idempotency_keys({src["id"]: window}, now_us_=now_us() + (window - 1) * DAY_US))
    assert forgot == 0
    assert live.client.post(url, json={"id": "evt-1"}).json()["request_id"] == first
    forgot = asyncio.run(store.forget_idempotency_keys({src["id"]: window}, now_us_=now_us() + (window + 1) * DAY_US))
    assert forgot == 1
    again = live.client.post(url, json={"id": "evt-1"}).json()["request_id"]
    assert again != first


def test_retention_pass_uses_each_sources_window(live: Any) -> None:
    """``purge_expired`` (the retention loop and ``hookbay purge``) clears keys past the window."""
    from hookbay.server.app import purge_expired

    src = live.create_source(config={"idempotency_key": "body:id", "idempotency_days": 1})
    url = f"/V1/Data/{src['token']}"
    first = live.client.post(url, json={"id": "evt-x"}).json()["request_id"]
    store, cache = live.app.store, live.app.cache

    async def age_and_purge() -> None:
        import sqlalchemy as sa

        from hookbay.store import schema

        def age(conn: sa.Connection) -> None:
            conn.execute(schema.requests.update().where(schema.requests.c.id == first)
                         .values(received_at=now_us() - 2 * DAY_US))

        await store.write(age)
        await purge_expired(store, cache)

    asyncio.run(age_and_purge())
    assert live.client.post(url, json={"id": "evt-x"}).json()["request_id"] != first
