"""Tenant isolation: a client token gets 404 for every object of another client, on every route."""

from __future__ import annotations

import asyncio
import re

from tests.conftest import ADMIN_TOKEN

CONTACT = {"SourceName": "Web", "SourceType": "Form", "Email": "iso@example.com"}


def _open_alert(live, rule: dict) -> str:  # type: ignore[no-untyped-def]
    """An open alert of ``rule``, stored as the evaluator would (from a second store, like a worker)."""
    from hookbay.store import open_store
    from hookbay.store.alerts import AlertStore, Transition

    async def go() -> None:
        store = open_store(live.settings)
        await store.start()
        try:
            await AlertStore(store).apply([Transition("open", {
                "id": "alt_theirs", "rule_id": rule["id"], "client_id": rule["client_id"], "subject": "system",
                "summary": "s", "detail": {}, "opened_at": 1, "notified_at": 1})])
        finally:
            await store.close()

    asyncio.run(go())
    assert live.client.get("/api/v1/alerts/alt_theirs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    return "alt_theirs"


def test_every_route_hides_other_clients_objects(live) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    theirs = live.create_source(client_id="globex", config={"parser": "contact", "signature": {"scheme": "github"},
                                                           "relay": True}, secret="globex-secret-1")
    mine_relay = live.create_source(client_id="acme", config={"relay": True})
    live.client.patch(f"/api/v1/sources/{theirs['id']}", json={"config": {"parser": "contact", "relay": True, "signature": None, "actions": [
        {"type": "forward", "url": "http://127.0.0.1:9/refused"}]}},
                      headers=admin)
    r = live.client.post(f"/V1/Data/{theirs['token']}?wait=1", json=CONTACT)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    pid = r.json()["receipt"]["records"][0]["profile_id"]
    tok = live.client.post("/api/v1/tokens", json={"name": "acme", "client_id": "acme"}, headers=admin).json()["token"]
    mine = {"Authorization": f"Bearer {tok}"}

    their_tok = live.client.post("/api/v1/tokens", json={"name": "g", "client_id": "globex"}, headers=admin).json()
    dlv = live.client.get("/api/v1/deliveries", params={"request_id": rid}, headers=admin).json()["items"][0]
    ids = {"source_id": theirs["id"], "request_id": rid, "profile_id": pid, "token_id": their_tok["id"],
           "delivery_id": dlv["id"]}
    their_rule = live.client.post("/api/v1/alert-rules", json={"name": "g", "client_id": "globex",
                                                              "condition": "silence", "minutes": 1}, headers=admin).json()
    ids["rule_id"] = their_rule["id"]
    ids["alert_id"] = _open_alert(live, their_rule)
    their_relay_tok = live.client.post(f"/api/v1/sources/{theirs['id']}/relay-tokens", json={}, headers=admin).json()
    my_relay_tok = live.client.post(f"/api/v1/sources/{mine_relay['id']}/relay-tokens", json={},
                                    headers=admin).json()["token"]
    their_msg = live.client.get(f"/api/v1/sources/{theirs['id']}/relay", headers=admin).json()["head"]
    # relay agent routes: acme's relay token against globex's queued message
    as_agent = {"headers": {"Authorization": f"Bearer {my_relay_tok}"}, "ids": {"message_id": str(their_msg["id"])}}
    per_case = {
        ("delete", "/api/v1/sources/{source_id}/relay-tokens/{token_id}"): {"ids": {"token_id": their_relay_tok["id"]}},
        ("post", "/api/v1/relay/messages/{message_id}/ack"): as_agent,
        ("post", "/api/v1/relay/messages/{message_id}/nack"): as_agent,
    }
    cases = {
        ("get", "/api/v1/sources/{source_id}"): None,
        ("patch", "/api/v1/sources/{source_id}"): {"name": "stolen"},
        ("put", "/api/v1/sources/{source_id}"): {"name": "stolen"},
        ("delete", "/api/v1/sources/{source_id}"): None,
        ("post", "/api/v1/sources/{source_id}/rotate"): {"grace_seconds": 0},
        ("get", "/api/v1/requests/{request_id}"): None,
        ("get", "/api/v1/requests/{request_id}/body"): None,
        ("get", "/api/v1/profiles/{profile_id}"): None,
        ("get", "/api/v1/profiles/{profile_id}/export"): None,
        ("delete", "/api/v1/profiles/{profile_id}"): None,
        ("delete", "/api/v1/tokens/{token_id}"): None,
        ("get", "/api/v1/deliveries/{delivery_id}"): None,
        ("post", "/api/v1/deliveries/{delivery_id}/retry"): None,
        ("get", "/api/v1/sources/{source_id}/relay"): None,
        ("post", "/api/v1/sources/{source_id}/relay-tokens"): {"name": "stolen"},
        ("get", "/api/v1/sources/{source_id}/relay-tokens"): None,
        ("delete", "/api/v1/sources/{source_id}/relay-tokens/{token_id}"): None,
        ("post", "/api/v1/relay/messages/{message_id}/ack"): {"lease_id": "lse_guess"},
        ("post", "/api/v1/relay/messages/{message_id}/nack"): {"lease_id": "lse_guess"},
        ("get", "/api/v1/alert-rules/{rule_id}"): None,
        ("patch", "/api/v1/alert-rules/{rule_id}"): {"name": "stolen"},
        ("delete", "/api/v1/alert-rules/{rule_id}"): None,
        ("get", "/api/v1/alerts/{alert_id}"): None,
    }
    spec = live.client.get("/api/v1/openapi.json").json()
    with_params = {(m, p) for p, ops in spec["paths"].items() if "{" in p for m in ops}
    assert with_params == set(cases), "a new route needs a tenant-isolation case"
    for (method, path), body in cases.items():
        extra = per_case.get((method, path), {})
        these = {**ids, **extra.get("ids", {})}
        url = re.sub(r"\{(\w+)\}", lambda m, these=these: these[m.group(1)], path)
        resp = live.client.request(method, url, json=body, headers=extra.get("headers", mine))
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        assert resp.json()["error"]["code"] == "not_found"

    # collection routes only ever show the caller's client
    assert live.client.get("/api/v1/sources", params={"client_id": "globex"}, headers=mine).status_code == 404
    assert all(s["client_id"] == "acme" for s in live.client.get("/api/v1/sources", headers=mine).json())
    assert live.client.get("/api/v1/requests", headers=mine).json()["items"] == []
    assert live.client.get("/api/v1/requests", params={"source": theirs["id"]}, headers=mine).status_code == 404
    assert live.client.get("/api/v1/profiles", params={"email": "iso@example.com"}, headers=mine).json() == []
    assert live.client.post("/api/v1/replay", json={"request_id": rid}, headers=mine).status_code == 404
    assert live.client.post("/api/v1/replay", json={"source": theirs["id"]}, headers=mine).status_code == 404
    assert live.client.get("/api/v1/deliveries", headers=mine).json()["items"] == []
    audit = live.client.get("/api/v1/audit", params={"limit": 1000}, headers=mine).json()["items"]
    assert audit and {e["client_id"] for e in audit} == {"acme"}
    assert live.client.post("/api/v1/deliveries/retry", json={"source": theirs["id"]}, headers=mine).status_code == 404
    assert live.client.post("/api/v1/deliveries/retry", json={"all": True}, headers=mine).json()["count"] == 0
    made = live.client.post("/api/v1/sources", json={"name": "x", "client_id": "globex"}, headers=mine)
    assert made.status_code == 404
    assert live.client.post("/api/v1/tokens", json={"name": "t"}, headers=mine).status_code == 403
    assert live.client.get("/api/v1/tokens", headers=mine).status_code == 403
    assert live.client.get("/", headers={"Authorization": f"Bearer {their_tok['token']}"}).status_code == 404
    assert live.client.get("/api/v1/alert-rules", headers=mine).json() == []
    assert live.client.get("/api/v1/alert-rules", params={"client_id": "globex"}, headers=mine).status_code == 404
    assert live.client.get("/api/v1/alerts", headers=mine).json() == []

    # and nothing of theirs changed
    still = live.client.get(f"/api/v1/sources/{theirs['id']}", headers=admin).json()
    assert still["name"] == theirs["name"] and still["signing_secrets"] == 1
    assert live.client.get(f"/api/v1/alert-rules/{their_rule['id']}", headers=admin).json()["name"] == "g"
    assert live.client.get("/api/v1/alerts/alt_theirs", headers=admin).json()["state"] == "open"
    assert live.client.get(f"/api/v1/profiles/{pid}", headers=admin).status_code == 200
    queue = live.client.get(f"/api/v1/sources/{theirs['id']}/relay", headers=admin).json()
    assert queue["depth"] == 1 and queue["head"]["deliveries"] == 0
    relay_toks = live.client.get(f"/api/v1/sources/{theirs['id']}/relay-tokens", headers=admin).json()
    assert [t["id"] for t in relay_toks] == [their_relay_tok["id"]]
    # the agent endpoints only serve the relay token's own source
    other = live.client.get("/api/v1/relay/messages", params={"wait": 0},
                            headers={"Authorization": f"Bearer {my_relay_tok}"}).json()
    assert other["source_id"] == mine_relay["id"] and other["messages"] == []
    batch = live.client.post("/api/v1/relay/messages/ack", json={"messages": [{"id": their_msg["id"], "lease_id": "x"}]},
                             headers={"Authorization": f"Bearer {my_relay_tok}"}).json()
    assert batch["results"] == [{"id": their_msg["id"], "state": "not_found"}]
