"""The ingest contract over real HTTP on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN

CONTACT = {"email": "a@b.co", "firstName": "Ada", "address": {"city": "London"}, "tags": ["x", "y"],
           "visits": 3, "score": 1.5, "vip": True, "signedUpAt": "2024-05-01T10:00:00Z"}


def _admin_get(live, path: str, **params):  # type: ignore[no-untyped-def]
    with live.admin() as c:
        r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_accept_store_and_process(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(name="Web Form")
    assert src["ingest_url"].endswith(f"/V1/Data/{src['token']}")
    raw = orjson.dumps(CONTACT) + b"  "
    r = live.client.post(f"/V1/Data/{src['token']}?utm=1", content=raw,
                         headers={"Content-Type": "application/json", "X-Custom": "yes"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "accepted"
    rid = body["request_id"]
    assert r.headers["x-request-id"] == rid

    receipt = live.wait_state(rid)
    assert receipt["state"] == "processed", receipt
    assert len(receipt["records"]) == 1
    fields = receipt["records"][0]["fields"]
    assert fields["email"] == "a@b.co"
    assert fields["first_name"] == "Ada"
    assert fields["address_city"] == "London"
    assert fields["tags"] == ["x", "y"]
    assert fields["visits"] == 3 and fields["score"] == 1.5 and fields["vip"] is True
    assert receipt["records"][0]["types"]["signed_up_at"] == "timestamp"

    detail = _admin_get(live, f"/api/v1/requests/{rid}")
    assert base64.b64decode(detail["body_base64"]) == raw
    assert detail["query"] == "utm=1"
    assert ["x-custom", "yes"] in detail["headers"]
    assert detail["peer"] == "127.0.0.1"
    assert detail["verdict"] == "accepted" and detail["state"] == "processed"
    with live.admin() as c:
        assert c.get(f"/api/v1/requests/{rid}/body").content == raw


def test_path_forms_are_case_insensitive(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source()
    for path in (f"/v1/data/{src['token']}", f"/V1/DATA/{src['token'].upper()}", f"/v1/data/webhook/{src['token']}"):
        r = live.client.post(path, json={"a": 1})
        assert r.status_code == 200, (path, r.text)


def _unknown_tokens(live) -> float:  # type: ignore[no-untyped-def]
    """This server's unknown-token counter, read from its /metrics. The registry is shared by every
    server in the test process, so only a difference between two reads says anything."""
    lines = [x for x in live.client.get("/metrics").text.splitlines() if x.startswith("hookbay_unknown_token_total ")]
    assert len(lines) == 1
    return float(lines[0].split()[-1])


def test_unknown_token_is_404_like_any_path_and_not_logged(live) -> None:  # type: ignore[no-untyped-def]
    live.create_source()
    before = _unknown_tokens(live)
    r1 = live.client.post("/V1/Data/00000000-0000-0000-0000-000000000000", json={"a": 1})
    r2 = live.client.post("/no/such/path", json={"a": 1})
    assert r1.status_code == r2.status_code == 404
    assert r1.content == r2.content
    assert r1.json()["error"]["code"] == "not_found"
    page = _admin_get(live, "/api/v1/requests")
    assert page["items"] == []
    after = _unknown_tokens(live)
    assert after - before == 1  # the unknown token counted once; the unknown path is not an ingest URL


def test_disabled_source_is_404(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(enabled=False)
    assert live.client.post(f"/V1/Data/{src['token']}", json={}).status_code == 404


def test_method_not_allowed_logged_with_rule(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"methods": ["POST", "PUT"]})
    r = live.client.get(f"/V1/Data/{src['token']}")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST, PUT"
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert live.client.put(f"/V1/Data/{src['token']}", json={"a": 1}).status_code == 200
    page = _admin_get(live, "/api/v1/requests", verdict="rejected")
    assert [(i["rule"], i["status"], i["method"]) for i in page["items"]] == [("method", 405, "GET")]


def test_api_key_header_and_query(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(api_key=True)
    key = src["api_key"]
    assert key and src["api_key_required"]
    url = f"/V1/Data/{src['token']}"
    assert live.client.post(url, json={"a": 1}).status_code == 401
    bad = live.client.post(url, json={"a": 1}, headers={"X-API-Key": key + "x"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
    ok = live.client.post(url, json={"a": 1}, headers={"X-API-Key": key})
    assert ok.status_code == 200
    assert live.client.post(url + f"?api-key={key}", json={"a": 1}).status_code == 200
    # the key is never shown again
    with live.admin() as c:
        assert c.get(f"/api/v1/sources/{src['id']}").json()["api_key"] is None
    # receipts of a keyed source need the key (or the admin token)
    rid = ok.json()["request_id"]
    assert live.client.get(f"/V1/Requests/{rid}").status_code == 401
    assert live.client.get(f"/V1/Requests/{rid}", headers={"X-API-Key": key}).status_code == 200
    rules = {i["rule"] for i in _admin_get(live, "/api/v1/requests", verdict="rejected")["items"]}
    assert rules == {"api_key"}


def test_body_limit_declared_and_streamed(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"max_body_bytes": 1000})
    url = f"/V1/Data/{src['token']}"
    r = live.client.post(url, content=b"x" * 1001, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"a":"'
        for _ in range(100):
            yield b"y" * 100
        yield b'"}'

    r2 = live.client.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert r2.status_code == 413
    ok = live.client.post(url, content=b'{"a":"' + b"z" * 900 + b'"}', headers={"Content-Type": "application/json"})
    assert ok.status_code == 200
    rej = _admin_get(live, "/api/v1/requests", verdict="rejected")["items"]
    assert len(rej) == 2 and {i["rule"] for i in rej} == {"body_size"}


@pytest.mark.parametrize("streamed", [False, True])
def test_body_of_exactly_the_limit_is_accepted(live, streamed: bool) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 row 3: the limit is inclusive. A body of exactly ``max_body_bytes`` is stored whole,
    one byte more is refused, whether the length is declared up front or the body is streamed."""
    src = live.create_source(config={"max_body_bytes": 1000})
    url = f"/V1/Data/{src['token']}"

    def body(n: int):  # type: ignore[no-untyped-def]
        raw = b'{"a":"' + b"z" * (n - 8) + b'"}'
        assert len(raw) == n
        return (raw[i:i + 100] for i in range(0, n, 100)) if streamed else raw

    exact = live.client.post(url, content=body(1000), headers={"Content-Type": "application/json"})
    assert exact.status_code == 200, exact.text
    with live.admin() as c:
        assert len(c.get(f"/api/v1/requests/{exact.json()['request_id']}/body").content) == 1000
    over = live.client.post(url, content=body(1001), headers={"Content-Type": "application/json"})
    assert over.status_code == 413 and over.json()["error"]["detail"] == {"limit_bytes": 1000}


def test_malformed_json_and_encodings(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"format": "json"})
    url = f"/V1/Data/{src['token']}"
    r = live.client.post(url, content=b'{"a": 1,,}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "malformed_body" and err["detail"]["position"] == 8
    bad_utf8 = live.client.post(url, content=b'{"a": "\xff\xfe"}', headers={"Content-Type": "application/json"})
    assert bad_utf8.status_code == 400 and "UTF-8" in bad_utf8.text
    wrong_type = live.client.post(url, content=b"a=1", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    latin = '{"name": "Zoë"}'.encode("latin-1")
    ok = live.client.post(url, content=latin, headers={"Content-Type": "application/json; charset=iso-8859-1"})
    assert ok.status_code == 200
    rec = live.wait_state(ok.json()["request_id"])
    assert rec["records"][0]["fields"]["name"] == "Zoë"
    deep = live.client.post(url, content=b"[" * 100000 + b"]" * 100000, headers={"Content-Type": "application/json"})
    assert deep.status_code == 400
    assert live.client.get("/healthz").status_code == 200
    rules = [i["rule"] for i in _admin_get(live, "/api/v1/requests", verdict="rejected")["items"]]
    assert sorted(rules) == ["format"] * 4


def test_auto_source_accepts_any_type_and_reports_on_receipt(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    form = live.client.post(url, data={"Email": "x@y.z", "Name": "X"})
    assert form.status_code == 200
    rec = live.wait_state(form.json()["request_id"])
    assert rec["state"] == "processed" and rec["records"][0]["fields"]["email"] == "x@y.z"
    blob = live.client.post(url, content=b"\x00\x01binary", headers={"Content-Type": "application/octet-stream"})
    assert blob.status_code == 200
    rec2 = live.wait_state(blob.json()["request_id"])
    assert rec2["state"] == "failed" and rec2["errors"][0]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("header", ["webhook-id", "X-GitHub-Delivery", "X-WC-Webhook-Delivery-ID", "Idempotency-Key"])
def test_duplicate_delivery_answers_original_and_processes_once(live, header: str) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    h = {header: "evt-123"}
    first = live.client.post(url, json={"n": 1}, headers=h)
    second = live.client.post(url, json={"n": 1}, headers=h)
    other = live.client.post(url, json={"n": 2}, headers={header: "evt-456"})
    assert first.status_code == second.status_code == other.status_code == 200
    rid = first.json()["request_id"]
    assert second.json()["request_id"] == rid
    assert other.json()["request_id"] != rid
    live.wait_state(rid)
    live.wait_state(other.json()["request_id"])
    items = _admin_get(live, "/api/v1/requests", source=src["id"])["items"]
    assert sorted(i["verdict"] for i in items) == ["accepted", "accepted", "duplicate"]
    dup = [i for i in items if i["verdict"] == "duplicate"][0]
    assert dup["duplicate_of"] == rid
    time.sleep(0.5)
    detail = _admin_get(live, f"/api/v1/requests/{rid}")
    assert len(detail["records"]) == 1


def test_idempotency_keys_are_per_source(live) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 row 14: an idempotency key is only a duplicate within its own source. Another
    tenant's webhook carrying the same ``Idempotency-Key`` gets its own request id and is processed,
    not answered with the first tenant's id and dropped."""
    acme = live.create_source(client_id="acme")
    globex = live.create_source(client_id="globex")
    h = {"Idempotency-Key": "evt-shared-1"}
    first = live.client.post(f"/V1/Data/{acme['token']}", json={"who": "acme"}, headers=h)
    second = live.client.post(f"/V1/Data/{globex['token']}", json={"who": "globex"}, headers=h)
    assert first.status_code == second.status_code == 200
    a_id, g_id = first.json()["request_id"], second.json()["request_id"]
    assert a_id != g_id
    assert live.wait_state(g_id)["records"][0]["fields"]["who"] == "globex"
    detail = _admin_get(live, f"/api/v1/requests/{g_id}")
    assert detail["source_id"] == globex["id"] and detail["verdict"] == "accepted"
    assert detail["duplicate_of"] is None
    # and within one source the key still deduplicates
    again = live.client.post(f"/V1/Data/{globex['token']}", json={"who": "globex"}, headers=h)
    assert again.json()["request_id"] == g_id


def test_concurrent_duplicates_share_one_id(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source()
    url = live.url + f"/V1/Data/{src['token']}"
    ids: list[str] = []

    def send() -> None:
        with httpx.Client() as c:
            ids.append(c.post(url, json={"n": 1}, headers={"Idempotency-Key": "same"}).json()["request_id"])

    ts = [threading.Thread(target=send) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 16


def test_storage_unavailable_is_503_never_200(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    live = live_server_factory(db_url, busy_timeout_ms=200, write_timeout=5)
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    assert live.client.post(url, json={"before": 1}).status_code == 200
    if db_url.startswith("sqlite"):
        locker = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        release = locker.rollback
    else:
        import psycopg

        locker = psycopg.connect(db_url)
        locker.execute("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE")
        release = locker.rollback
    try:
        r = live.client.post(url, json={"during": 1})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        assert r.json()["error"]["code"] == "storage_unavailable"
    finally:
        release()
        locker.close()
    after = live.client.post(url, json={"after": 1})
    assert after.status_code == 200
    bodies = set()
    with live.admin() as c:
        for item in c.get("/api/v1/requests", params={"source": src["id"]}).json()["items"]:
            bodies.add(c.get(f"/api/v1/requests/{item['id']}/body").content)
    assert bodies == {b'{"before":1}', b'{"after":1}'}


def test_request_search_filters(live) -> None:  # type: ignore[no-untyped-def]
    a = live.create_source(name="A")
    b = live.create_source(name="B", config={"format": "json"})
    live.client.post(f"/V1/Data/{a['token']}", json={"needle": "haystack-1"})
    live.client.post(f"/V1/Data/{a['token']}", content=b"\xff\xfe not utf-8",
                     headers={"Content-Type": "application/octet-stream"})
    rb = live.client.post(f"/V1/Data/{b['token']}", json={"other": 2})
    live.client.post(f"/V1/Data/{b['token']}", content=b"{", headers={"Content-Type": "application/json"})
    live.wait_state(rb.json()["request_id"])
    assert len(_admin_get(live, "/api/v1/requests", source=a["id"])["items"]) == 2
    assert len(_admin_get(live, "/api/v1/requests", source="B")["items"]) == 2
    assert len(_admin_get(live, "/api/v1/requests", q="haystack-1")["items"]) == 1
    assert len(_admin_get(live, "/api/v1/requests", state="processed", source="B")["items"]) == 1
    assert len(_admin_get(live, "/api/v1/requests", since="1h")["items"]) == 4
    assert _admin_get(live, "/api/v1/requests", until="2000-01-01T00:00:00Z")["items"] == []
    page1 = _admin_get(live, "/api/v1/requests", limit=2)
    page2 = _admin_get(live, "/api/v1/requests", limit=2, before=page1["next_cursor"])
    assert len(page1["items"]) == 2 and len(page2["items"]) == 2
    assert {i["id"] for i in page1["items"]}.isdisjoint({i["id"] for i in page2["items"]})


def test_admin_api_errors_share_one_shape(live) -> None:  # type: ignore[no-untyped-def]
    c = live.client
    cases = [
        c.get("/api/v1/sources"),
        c.get("/api/v1/sources", headers={"Authorization": "Bearer wrong"}),
        c.get("/api/v1/sources/nope", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}),
        c.post("/api/v1/sources", json={"name": ""}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}),
        c.get("/api/v1/nothing-here"),
        c.get("/V1/Requests/req_missing"),
    ]
    assert [r.status_code for r in cases] == [401, 401, 404, 422, 404, 404]
    for r in cases:
        err = r.json()["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str)


def test_client_token_sees_only_its_client(live) -> None:  # type: ignore[no-untyped-def]
    mine = live.create_source(client_id="acme")
    theirs = live.create_source(client_id="globex")
    with live.admin() as c:
        tok = c.post("/api/v1/tokens", json={"name": "acme", "client_id": "acme"}).json()["token"]
    live.client.post(f"/V1/Data/{theirs['token']}", json={"a": 1})
    h = {"Authorization": f"Bearer {tok}"}
    ids = [s["id"] for s in live.client.get("/api/v1/sources", headers=h).json()]
    assert ids == [mine["id"]]
    assert live.client.get(f"/api/v1/sources/{theirs['id']}", headers=h).status_code == 404
    assert live.client.get("/api/v1/requests", headers=h).json()["items"] == []


def test_source_change_reaches_running_server(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    assert live.client.post(url, json={}).status_code == 200
    # a change written by another process (as the CLI does) is picked up from the revision marker
    import asyncio

    from hookbay.store import open_store

    async def disable() -> None:
        store = open_store(live.settings)
        await store.start()
        try:
            await store.update_source(src["id"], {"enabled": False})
        finally:
            await store.close()

    asyncio.run(disable())
    deadline = time.monotonic() + 3
    while live.client.post(url, json={}).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_startup_freezes_long_lived_objects_out_of_the_collector(live_server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A full collection that walks every module and class stalls the event loop for ~100 ms under
    load; what exists once serve has started must be frozen, so collections see only new objects."""
    import gc

    before = gc.get_freeze_count()
    live = live_server_factory(f"sqlite:///{tmp_path / 'gc.db'}")
    assert gc.get_freeze_count() > before
    src = live.create_source(name="after freeze")
    r = live.client.post(f"/V1/Data/{src['token']}", json=CONTACT)
    assert r.status_code == 200
    assert live.wait_state(r.json()["request_id"], ("processed",))["state"] == "processed"
