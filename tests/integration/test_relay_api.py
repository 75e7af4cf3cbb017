"""The relay endpoints over real HTTP, on both dialects: relay-token auth (and nothing else), long-poll
woken by the commit, lease/ack/nack, queue status, JSON errors."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest

import hookbay.relay.hub
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def _relay_source(live, **config: object) -> tuple[dict, str]:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"relay": True, **config})
    r = live.client.post(f"/api/v1/sources/{src['id']}/relay-tokens", json={"name": "edge"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    tok = r.json()
    assert tok["token"].startswith("hbr_") and tok["source_id"] == src["id"]
    return src, tok["token"]


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_only_relay_tokens_open_the_agent_endpoints(live) -> None:  # type: ignore[no-untyped-def]
    src, tok = _relay_source(live)
    client_tok = live.client.post("/api/v1/tokens", json={"name": "c", "client_id": "acme"},
                                  headers=ADMIN).json()["token"]
    c = live.client
    _error(c.get("/api/v1/relay/messages", params={"wait": 0}), 401, "unauthorized")
    assert c.get("/api/v1/relay/messages").headers["www-authenticate"] == "Bearer"
    for wrong in (tok + "x", ADMIN_TOKEN, client_tok, "hbr_nope"):
        _error(c.get("/api/v1/relay/messages", params={"wait": 0}, headers=_bearer(wrong)), 401, "unauthorized")
        _error(c.post("/api/v1/relay/messages/1/ack", json={"lease_id": "x"}, headers=_bearer(wrong)),
               401, "unauthorized")
    # and a relay token is not an API token
    _error(c.get("/api/v1/sources", headers=_bearer(tok)), 401, "unauthorized")
    _error(c.get(f"/api/v1/sources/{src['id']}/relay", headers=_bearer(tok)), 401, "unauthorized")
    r = c.get("/api/v1/relay/messages", params={"wait": 0}, headers=_bearer(tok))
    assert r.status_code == 200 and r.json()["messages"] == [] and r.json()["lease_id"] is None
    # validation errors have the JSON error shape too
    _error(c.get("/api/v1/relay/messages", params={"wait": -1}, headers=_bearer(tok)), 422, "invalid_request")
    _error(c.get("/api/v1/relay/messages", params={"lease_id": "bad id!"}, headers=_bearer(tok)),
           422, "invalid_request")
    _error(c.post("/api/v1/relay/messages/1/ack", json={}, headers=_bearer(tok)), 422, "invalid_request")

    # relay-token management: a client token of the owning client may do it; revocation is immediate
    r = c.post(f"/api/v1/sources/{src['id']}/relay-tokens", json={"name": "second"}, headers=_bearer(client_tok))
    assert r.status_code == 201
    second = r.json()
    listed = c.get(f"/api/v1/sources/{src['id']}/relay-tokens", headers=_bearer(client_tok)).json()
    assert [t["name"] for t in listed] == ["edge", "second"] and all(t["token"] is None for t in listed)
    assert c.delete(f"/api/v1/sources/{src['id']}/relay-tokens/{second['id']}", headers=ADMIN).status_code == 204
    _error(c.delete(f"/api/v1/sources/{src['id']}/relay-tokens/{second['id']}", headers=ADMIN), 404, "not_found")
    _error(c.get("/api/v1/relay/messages", params={"wait": 0}, headers=_bearer(second["token"])),
           401, "unauthorized")


def test_long_poll_wakes_on_commit_and_lease_ack_nack(live, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(hookbay.relay.hub, "RECHECK_S", 30.0)  # only the commit wake-up can end the wait early
    src, tok = _relay_source(live)
    agent = httpx.Client(base_url=live.url, headers=_bearer(tok), timeout=30)
    got: dict = {}

    def poll() -> None:
        t0 = time.monotonic()
        got["r"] = agent.get("/api/v1/relay/messages", params={"wait": 20, "max": 5, "visibility": 30})
        got["s"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    body = b'{"order": 1, "caf\xc3\xa9": true}'
    sent = live.client.post(f"/V1/Data/{src['token']}?x=1&y=%20", content=body,
                            headers={"Content-Type": "application/json", "X-Trace": "abc"})
    assert sent.status_code == 200
    t.join(timeout=25)
    assert got["r"].status_code == 200, got["r"].text
    assert 0.4 < got["s"] < 3.0, got["s"]
    page = got["r"].json()
    assert page["source_id"] == src["id"] and page["visibility_s"] == 30
    [m] = page["messages"]
    assert m["request_id"] == sent.json()["request_id"] and m["lease_id"] == page["lease_id"]
    assert m["method"] == "POST" and m["query"] == "x=1&y=%20" and m["deliveries"] == 0
    assert base64.b64decode(m["body_b64"]) == body
    assert ["x-trace", "abc"] in m["headers"]
    assert m["path"].lower().startswith("/v1/data/")

    # a second agent gets nothing while the head is leased
    assert agent.get("/api/v1/relay/messages", params={"wait": 0}).json()["messages"] == []
    status = live.client.get(f"/api/v1/sources/{src['id']}/relay", headers=ADMIN).json()
    assert status["relay"] is True and status["depth"] == 1 and status["leased"] == 1
    assert status["head"]["id"] == m["id"] and status["head"]["leased_until"]

    _error(agent.post(f"/api/v1/relay/messages/{m['id']}/ack", json={"lease_id": "lse_wrong"}), 409, "conflict")
    _error(agent.post("/api/v1/relay/messages/999999/ack", json={"lease_id": m["lease_id"]}), 404, "not_found")
    r = agent.post(f"/api/v1/relay/messages/{m['id']}/nack",
                   json={"lease_id": m["lease_id"], "delay_s": 0.5, "error": "HTTP 503 from the app"})
    assert r.status_code == 200 and r.json()["state"] == "ready"
    head = live.client.get(f"/api/v1/sources/{src['id']}/relay", headers=ADMIN).json()["head"]
    assert head["last_error"] == "HTTP 503 from the app" and head["deliveries"] == 1 and head["leased_until"] is None

    # delayed: a long-poll waits out the delay, then gets it again
    t0 = time.monotonic()
    monkeypatch.setattr(hookbay.relay.hub, "RECHECK_S", 0.2)
    again = agent.get("/api/v1/relay/messages", params={"wait": 5}).json()["messages"]
    assert [x["id"] for x in again] == [m["id"]] and again[0]["deliveries"] == 1
    assert time.monotonic() - t0 < 4
    r = agent.post(f"/api/v1/relay/messages/{m['id']}/ack", json={"lease_id": again[0]["lease_id"]})
    assert r.status_code == 200 and r.json() == {"id": m["id"], "state": "acked", "already_acked": False}
    r = agent.post(f"/api/v1/relay/messages/{m['id']}/ack", json={"lease_id": again[0]["lease_id"]})
    assert r.status_code == 200 and r.json()["already_acked"] is True
    _error(agent.post(f"/api/v1/relay/messages/{m['id']}/ack", json={"lease_id": m["lease_id"]}), 409, "conflict")
    status = live.client.get(f"/api/v1/sources/{src['id']}/relay", headers=ADMIN).json()
    assert status["depth"] == 0 and status["head"] is None and status["oldest_age_s"] is None
    agent.close()


def test_order_across_batches_and_non_relay_sources(live) -> None:  # type: ignore[no-untyped-def]
    src, tok = _relay_source(live)
    plain = live.create_source()
    live.client.post(f"/V1/Data/{plain['token']}", json={"plain": True})
    for i in range(25):
        assert live.client.post(f"/V1/Data/{src['token']}", json={"n": i}).status_code == 200
    # a duplicate delivery (same idempotency key) is not queued twice
    for _ in range(2):
        live.client.post(f"/V1/Data/{src['token']}", json={"n": 25}, headers={"Idempotency-Key": "k-25"})
    agent = httpx.Client(base_url=live.url, headers=_bearer(tok), timeout=10)
    seen = []
    stale = None
    while True:
        page = agent.get("/api/v1/relay/messages", params={"wait": 0, "max": 7}).json()
        if not page["messages"]:
            break
        assert len(page["messages"]) <= 7
        seen += [base64.b64decode(m["body_b64"]) for m in page["messages"]]
        # acks in one request (what the agent does); a retried batch is fine, a stale lease is reported
        acks = [{"id": m["id"], "lease_id": m["lease_id"]} for m in page["messages"]]
        r = agent.post("/api/v1/relay/messages/ack", json={"messages": acks})
        assert r.status_code == 200 and {x["state"] for x in r.json()["results"]} == {"acked"}
        extra = [{"id": 10**9, "lease_id": "x"}] + ([stale] if stale else [])
        r = agent.post("/api/v1/relay/messages/ack", json={"messages": acks[:1] + extra})
        assert [x["state"] for x in r.json()["results"]] == ["already_acked", "not_found"] + (["conflict"] if stale else [])
        stale = {"id": acks[0]["id"], "lease_id": "lse_stale"}
    assert seen == [b'{"n":%d}' % i for i in range(26)]
    _error(agent.post("/api/v1/relay/messages/ack", json={"messages": []}), 422, "invalid_request")
    # relay mode off: nothing is queued any more
    live.client.patch(f"/api/v1/sources/{src['id']}", json={"config": {"relay": False}}, headers=ADMIN)
    time.sleep(0.3)
    live.client.post(f"/V1/Data/{src['token']}", json={"n": 99})
    assert agent.get("/api/v1/relay/messages", params={"wait": 0}).json()["messages"] == []
    status = live.client.get(f"/api/v1/sources/{src['id']}/relay", headers=ADMIN).json()
    assert status["relay"] is False and status["depth"] == 0
    agent.close()


def test_metrics_show_each_relay_queue_until_acked(live) -> None:  # type: ignore[no-untyped-def]
    src, tok = _relay_source(live)
    for i in range(3):
        assert live.client.post(f"/V1/Data/{src['token']}", json={"n": i}).status_code == 200
    line = f'hookbay_relay_ready{{source="{src["id"]}"}}'

    def gauge() -> float | None:
        for ln in live.client.get("/metrics").text.splitlines():
            if ln.startswith(line):
                return float(ln.split()[-1])
        return None

    deadline = time.monotonic() + 10
    while gauge() != 3.0:
        assert time.monotonic() < deadline, live.client.get("/metrics").text[-2000:]
        time.sleep(0.2)
    agent = httpx.Client(base_url=live.url, headers=_bearer(tok), timeout=10)
    page = agent.get("/api/v1/relay/messages", params={"wait": 0}).json()
    r = agent.post("/api/v1/relay/messages/ack",
                   json={"messages": [{"id": m["id"], "lease_id": m["lease_id"]} for m in page["messages"]]})
    assert r.status_code == 200
    agent.close()
    while gauge() is not None:  # an empty queue drops its series
        assert time.monotonic() < deadline + 10
        time.sleep(0.2)
