"""Tenant isolation: a client token gets 404 for every object of another client, on every route and
on every console page. Both route tables are walked, so a new route or page without a case here
fails the suite (issue #19)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.routing import Mount, Route

from tests.conftest import ADMIN_TOKEN

CONTACT = {"SourceName": "Web", "SourceType": "Form", "Email": "iso@example.com", "FirstName": "Isolde"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
THEIR_SOURCE = "Globex intake"


@dataclass
class Tenants:
    """globex's objects (one of each kind, every one reachable by id) and acme's client token."""

    theirs: dict[str, Any]
    mine_relay: dict[str, Any]
    rid: str
    pid: str
    their_tok: dict[str, Any]
    dlv: dict[str, Any]
    their_relay_tok: dict[str, Any]
    my_relay_tok: str
    their_msg: dict[str, Any]
    tok: str
    their_rule: dict[str, Any]
    alert_id: str

    @property
    def mine(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tok}"}

    @property
    def ids(self) -> dict[str, str]:
        return {"source_id": self.theirs["id"], "request_id": self.rid, "profile_id": self.pid,
                "token_id": self.their_tok["id"], "delivery_id": self.dlv["id"], "message_id": str(self.their_msg["id"]),
                "rule_id": self.their_rule["id"], "alert_id": self.alert_id,
                "relay_token_id": self.their_relay_tok["id"]}

    def secrets(self) -> list[str]:
        """What no acme page or answer may contain: globex's ids, names and data."""
        ids = [v for k, v in self.ids.items() if k != "message_id"]  # a small integer: found anywhere
        return [*ids, self.their_relay_tok["id"], THEIR_SOURCE, "iso@example.com", self.theirs["token"]]


def _open_alert(live: Any, rule: dict[str, Any]) -> str:
    """An open alert of ``rule``, stored as the evaluator would (from a second store, like a worker)."""
    from hookbay.store import open_store
    from hookbay.store.alert_rows import StoredAlert
    from hookbay.store.alerts import AlertStore, Transition

    async def go() -> None:
        store = open_store(live.settings)
        await store.start()
        try:
            await AlertStore(store).apply([Transition("open", StoredAlert(
                id="alt_theirs", rule_id=rule["id"], client_id=rule["client_id"], subject="system", state="open",
                summary="s", detail={}, opened_at=1, resolved_at=None, notified_at=1, notifications=1))])
        finally:
            await store.close()

    asyncio.run(go())
    return "alt_theirs"


def _globex_and_acme(live: Any) -> Tenants:
    theirs = live.create_source(name=THEIR_SOURCE, client_id="globex", secret="globex-secret-1",
                                config={"parser": "contact", "signature": {"scheme": "github"}, "relay": True})
    mine_relay = live.create_source(client_id="acme", config={"relay": True})
    # a forward to a private address without allow_private_destinations: a dead letter at its first attempt
    live.client.patch(f"/api/v1/sources/{theirs['id']}", headers=ADMIN, json={"config": {
        "parser": "contact", "relay": True, "signature": None,
        "actions": [{"type": "forward", "url": "http://127.0.0.1:9/refused"}]}})
    r = live.client.post(f"/V1/Data/{theirs['token']}?wait=1", json=CONTACT)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    tok = live.client.post("/api/v1/tokens", json={"name": "acme", "client_id": "acme"}, headers=ADMIN).json()["token"]
    rule = live.client.post("/api/v1/alert-rules", json={"name": "g", "client_id": "globex", "condition": "silence",
                                                         "minutes": 1}, headers=ADMIN).json()
    deadline = time.monotonic() + 15
    while (dlv := live.client.get("/api/v1/deliveries", params={"request_id": rid},
                                  headers=ADMIN).json()["items"][0])["state"] != "dead":
        assert time.monotonic() < deadline, dlv
        time.sleep(0.05)
    return Tenants(
        theirs=theirs, mine_relay=mine_relay, rid=rid, pid=r.json()["receipt"]["records"][0]["profile_id"],
        their_tok=live.client.post("/api/v1/tokens", json={"name": "g", "client_id": "globex"}, headers=ADMIN).json(),
        dlv=live.client.get(f"/api/v1/deliveries/{dlv['id']}", headers=ADMIN).json(),
        their_relay_tok=live.client.post(f"/api/v1/sources/{theirs['id']}/relay-tokens", json={}, headers=ADMIN).json(),
        my_relay_tok=live.client.post(f"/api/v1/sources/{mine_relay['id']}/relay-tokens", json={},
                                      headers=ADMIN).json()["token"],
        their_msg=live.client.get(f"/api/v1/sources/{theirs['id']}/relay", headers=ADMIN).json()["head"],
        tok=tok, their_rule=rule, alert_id=_open_alert(live, rule))


def _theirs_unchanged(live: Any, t: Tenants) -> None:
    """After every attempt: globex's source, profile, relay queue, relay tokens and dead letter as they were."""
    still = live.client.get(f"/api/v1/sources/{t.theirs['id']}", headers=ADMIN).json()
    assert still["name"] == THEIR_SOURCE and still["enabled"] and still["signing_secrets"] == 1
    assert not still["api_key_required"] and still["token"] == t.theirs["token"]
    assert live.client.get(f"/api/v1/profiles/{t.pid}", headers=ADMIN).status_code == 200
    queue = live.client.get(f"/api/v1/sources/{t.theirs['id']}/relay", headers=ADMIN).json()
    assert queue["depth"] == 1 and queue["head"]["deliveries"] == 0
    relay_toks = live.client.get(f"/api/v1/sources/{t.theirs['id']}/relay-tokens", headers=ADMIN).json()
    assert [x["id"] for x in relay_toks] == [t.their_relay_tok["id"]]
    d = live.client.get(f"/api/v1/deliveries/{t.dlv['id']}", headers=ADMIN).json()
    assert d["state"] == "dead" and d["attempt_log"] == t.dlv["attempt_log"]  # never queued again
    names = [s["name"] for s in live.client.get("/api/v1/sources", params={"client_id": "globex"},
                                                headers=ADMIN).json()]
    assert THEIR_SOURCE in names and not {"x", "planted", "stolen"} & set(names)  # none made for globex
    tokens = live.client.get("/api/v1/tokens", headers=ADMIN).json()
    assert t.their_tok["id"] in [x["id"] for x in tokens]
    assert live.client.get(f"/api/v1/alert-rules/{t.their_rule['id']}", headers=ADMIN).json()["name"] == "g"
    assert live.client.get(f"/api/v1/alerts/{t.alert_id}", headers=ADMIN).json()["state"] == "open"


# --- the API --------------------------------------------------------------------------------------

# routes with an object id in the path: acme's token and globex's id answer 404, like an unknown id
PARAM_CASES: dict[tuple[str, str], Any] = {
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


def _sources(live: Any, t: Tenants) -> None:
    assert live.client.get("/api/v1/sources", params={"client_id": "globex"}, headers=t.mine).status_code == 404
    listed = live.client.get("/api/v1/sources", headers=t.mine).json()
    assert listed and all(s["client_id"] == "acme" for s in listed)


def _create_source(live: Any, t: Tenants) -> None:
    made = live.client.post("/api/v1/sources", json={"name": "x", "client_id": "globex"}, headers=t.mine)
    assert made.status_code == 404 and made.json()["error"]["code"] == "not_found"


def _requests(live: Any, t: Tenants) -> None:
    assert live.client.get("/api/v1/requests", headers=t.mine).json()["items"] == []
    assert live.client.get("/api/v1/requests", params={"source": t.theirs["id"]}, headers=t.mine).status_code == 404


def _profiles(live: Any, t: Tenants) -> None:
    assert live.client.get("/api/v1/profiles", params={"email": "iso@example.com"}, headers=t.mine).json() == []


def _replay(live: Any, t: Tenants) -> None:
    assert live.client.post("/api/v1/replay", json={"request_id": t.rid}, headers=t.mine).status_code == 404
    assert live.client.post("/api/v1/replay", json={"source": t.theirs["id"]}, headers=t.mine).status_code == 404
    everything = live.client.post("/api/v1/replay", json={"dry_run": True, "all": True}, headers=t.mine).json()
    assert everything["count"] == 0


def _deliveries(live: Any, t: Tenants) -> None:
    assert live.client.get("/api/v1/deliveries", headers=t.mine).json()["items"] == []
    assert live.client.get("/api/v1/deliveries", params={"request_id": t.rid}, headers=t.mine).json()["items"] == []


def _retry_deliveries(live: Any, t: Tenants) -> None:
    assert live.client.post("/api/v1/deliveries/retry", json={"source": t.theirs["id"]}, headers=t.mine).status_code == 404
    assert live.client.post("/api/v1/deliveries/retry", json={"all": True}, headers=t.mine).json()["count"] == 0


def _relay_messages(live: Any, t: Tenants) -> None:
    """The agent endpoints only serve the relay token's own source."""
    other = live.client.get("/api/v1/relay/messages", params={"wait": 0},
                            headers={"Authorization": f"Bearer {t.my_relay_tok}"}).json()
    assert other["source_id"] == t.mine_relay["id"] and other["messages"] == []


def _relay_ack_batch(live: Any, t: Tenants) -> None:
    batch = live.client.post("/api/v1/relay/messages/ack", json={"messages": [{"id": t.their_msg["id"], "lease_id": "x"}]},
                             headers={"Authorization": f"Bearer {t.my_relay_tok}"}).json()
    assert batch["results"] == [{"id": t.their_msg["id"], "state": "not_found"}]


def _audit(live: Any, t: Tenants) -> None:
    audit = live.client.get("/api/v1/audit", params={"limit": 1000}, headers=t.mine).json()["items"]
    assert audit and {e["client_id"] for e in audit} == {"acme"}


def _alert_rules(live: Any, t: Tenants) -> None:
    assert live.client.get("/api/v1/alert-rules", headers=t.mine).json() == []
    assert live.client.get("/api/v1/alert-rules", params={"client_id": "globex"}, headers=t.mine).status_code == 404


def _create_alert_rule(live: Any, t: Tenants) -> None:
    made = live.client.post("/api/v1/alert-rules", json={"name": "planted", "client_id": "globex",
                                                         "condition": "silence", "minutes": 1}, headers=t.mine)
    assert made.status_code in (403, 404), made.text


def _alerts(live: Any, t: Tenants) -> None:
    assert live.client.get("/api/v1/alerts", headers=t.mine).json() == []


def _orders(live: Any, t: Tenants) -> None:
    """globex's order (its buyer is globex's profile) is invisible to acme by profile, source or client."""
    import json
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "mappings"
    from hookbay.parsers import compile

    mapping = compile.parse_text((docs / "woocommerce-order.yaml").read_text()).to_dict()
    shop = live.client.post("/api/v1/sources", headers=ADMIN, json={
        "name": "Globex shop", "client_id": "globex", "config": {"parser": "mapping", "mapping": mapping}}).json()
    body = json.loads((docs / "woocommerce-order-created.json").read_text())
    body["billing"]["email"] = "iso@example.com"
    assert live.client.post(f"/V1/Data/{shop['token']}?wait=1", json=body).status_code == 200
    theirs = live.client.get("/api/v1/orders", params={"profile": t.pid}, headers=ADMIN).json()
    assert [o["external_id"] for o in theirs] == ["1842"]
    assert live.client.get("/api/v1/orders", headers=t.mine).json() == []
    assert live.client.get("/api/v1/orders", params={"profile": t.pid}, headers=t.mine).json() == []
    assert live.client.get("/api/v1/orders", params={"source": shop["id"]}, headers=t.mine).status_code == 404
    assert live.client.get("/api/v1/orders", params={"client_id": "globex"}, headers=t.mine).status_code == 404


# routes without an object id in the path, each with its check
COLLECTION_CASES: dict[tuple[str, str], Callable[[Any, Tenants], None]] = {
    ("get", "/api/v1/sources"): _sources,
    ("post", "/api/v1/sources"): _create_source,
    ("get", "/api/v1/requests"): _requests,
    ("get", "/api/v1/profiles"): _profiles,
    ("post", "/api/v1/replay"): _replay,
    ("get", "/api/v1/deliveries"): _deliveries,
    ("post", "/api/v1/deliveries/retry"): _retry_deliveries,
    ("get", "/api/v1/relay/messages"): _relay_messages,
    ("post", "/api/v1/relay/messages/ack"): _relay_ack_batch,
    ("get", "/api/v1/audit"): _audit,
    ("get", "/api/v1/alert-rules"): _alert_rules,
    ("post", "/api/v1/alert-rules"): _create_alert_rule,
    ("get", "/api/v1/alerts"): _alerts,
    ("get", "/api/v1/orders"): _orders,
}
# routes a client token may not use at all: 403
ADMIN_ONLY: dict[tuple[str, str], Any] = {
    ("get", "/api/v1/tokens"): None,
    ("post", "/api/v1/tokens"): {"name": "t", "client_id": "globex"},
    ("get", "/api/v1/providers"): None,
    ("put", "/api/v1/providers"): {"client_id": "globex", "type": "mailchimp", "key_env": "HOOKBAY_PROVIDER_X"},
    ("delete", "/api/v1/providers/{client_id}/{provider}"): None,
}
# routes that hold no tenant's data, with the reason; still asked, and their answer must not leak
NO_TENANT_DATA = {
    ("get", "/api/v1/openapi.json"): "the API's schema, the same for every caller",
    ("get", "/api/v1/docs"): "the Swagger UI page, static HTML around the schema",
    ("get", "/api/v1/docs/static/{name}"): "Swagger UI's own script, stylesheet and icon, from the package",
}


def _ingest_by_url(live: Any, t: Tenants, path: str) -> None:
    """The ingest URL is its own credential: a client token opens no other client's source, and an
    unknown token answers 404 naming nothing."""
    for token in ("not-a-token", t.theirs["token"] + "x"):
        resp = live.client.post(path + token, json=CONTACT, headers=t.mine)
        assert resp.status_code == 404 and not [x for x in t.secrets() if x in resp.text], (path, resp.text)


def _receipt(live: Any, t: Tenants, path: str) -> None:
    """A receipt is read by its 128-bit request id (and the source's API key when it has one): a
    client token adds nothing to that, for another client's request or an unknown one."""
    assert live.client.get(path + "req_unknown", headers=t.mine).status_code == 404
    with_token = live.client.get(path + t.rid, headers=t.mine)
    assert with_token.status_code == 200 and with_token.json() == live.client.get(path + t.rid).json()
    keyed = live.create_source(client_id="globex", api_key=True)
    rid = live.client.post(f"/V1/Data/{keyed['token']}?api-key={keyed['api_key']}", json=CONTACT).json()["request_id"]
    resp = live.client.get(path + rid, headers=t.mine)
    assert resp.status_code == 401 and rid not in resp.text


def _no_tenant_data(live: Any, t: Tenants, path: str) -> None:
    resp = live.client.get(path, headers=t.mine)
    assert resp.status_code == 200 and not [x for x in t.secrets() if x in resp.text], (path, resp.text[:200])


def _metrics(live: Any, t: Tenants, path: str) -> None:
    """The operator's counters, by opaque source id: with ``HOOKBAY_METRICS_TOKEN`` set a client
    token is refused; left empty (the documented choice to bind or firewall it) they still name
    no source, client, token or person."""
    live.app.settings.metrics_token = "metrics-secret"
    try:
        resp = live.client.get(path, headers=t.mine)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
        assert live.client.get(path, headers={"Authorization": "Bearer metrics-secret"}).status_code == 200
    finally:
        live.app.settings.metrics_token = ""
    resp = live.client.get(path, headers=t.mine)
    leaks = [x for x in t.secrets() if x in resp.text and x != t.theirs["id"]]
    assert resp.status_code == 200 and not leaks, leaks


# paths the server dispatches itself before the API's route table (HookbayApp.__call__), each with its case
HAND_CASES: dict[str, Callable[[Any, Tenants, str], None]] = {
    "/v1/data/": _ingest_by_url,
    "/v1/test/": _ingest_by_url,
    "/v1/requests/": _receipt,
    "/healthz": _no_tenant_data,  # "ok", nothing else
    "/readyz": _no_tenant_data,  # the store's and worker's health, no client's data
    "/metrics": _metrics,
    "/ui": lambda live, t, path: None,  # the console: every page has its case below
    "/ui/": lambda live, t, path: None,
}


def _hand_routes() -> set[str]:
    """The path literals ``HookbayApp.__call__`` compares ``path`` (or its lower case) with."""
    import ast
    import inspect
    import textwrap

    from hookbay.server.app import HookbayApp

    tree = ast.parse(textwrap.dedent(inspect.getsource(HookbayApp.__call__)))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id in ("path", "lower"):
            out |= {c.value for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith"
                and isinstance(node.func.value, ast.Name) and node.func.value.id in ("path", "lower")):
            out |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return out


def _api_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) the admin API's route table serves (HEAD is GET's twin)."""
    out = set()
    for r in app.admin.routes:
        assert isinstance(r, Route), f"a {type(r).__name__} in the API's route table: give it a tenant case"
        out |= {(m.lower(), r.path) for m in (r.methods or ()) if m != "HEAD"}
    return out


def test_every_route_hides_other_clients_objects(live) -> None:  # type: ignore[no-untyped-def]
    """Every route of the API's route table has a case: by id, another client's object is a 404;
    a listing or bulk action covers only the caller's client; admin-only routes are a 403; the few
    routes with no tenant data are listed with their reason and leak nothing either."""
    t = _globex_and_acme(live)
    routes = _api_routes(live.app)
    cases = [set(PARAM_CASES), set(COLLECTION_CASES), set(ADMIN_ONLY), set(NO_TENANT_DATA)]
    assert sum(len(c) for c in cases) == len(set().union(*cases)), "a route is in two case lists"
    missing, stale = routes - set().union(*cases), set().union(*cases) - routes
    assert not missing, f"routes without a tenant-isolation case: {sorted(missing)}"
    assert not stale, f"cases for routes that no longer exist: {sorted(stale)}"

    # relay agent routes: acme's relay token against globex's queued message
    as_agent = {"headers": {"Authorization": f"Bearer {t.my_relay_tok}"}}
    per_case: dict[tuple[str, str], dict[str, Any]] = {
        ("delete", "/api/v1/sources/{source_id}/relay-tokens/{token_id}"): {"ids": {"token_id": t.their_relay_tok["id"]}},
        ("post", "/api/v1/relay/messages/{message_id}/ack"): as_agent,
        ("post", "/api/v1/relay/messages/{message_id}/nack"): as_agent,
    }
    for (method, path), body in PARAM_CASES.items():
        extra = per_case.get((method, path), {})
        these = {**t.ids, **extra.get("ids", {})}
        url = re.sub(r"\{(\w+)\}", lambda m, these=these: these[m.group(1)], path)
        resp = live.client.request(method, url, json=body, headers=extra.get("headers", t.mine))
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        assert resp.json()["error"]["code"] == "not_found"
    for check in COLLECTION_CASES.values():
        check(live, t)
    for (method, path), body in ADMIN_ONLY.items():
        resp = live.client.request(method, path, json=body, headers=t.mine)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden", (method, path, resp.text)
    for method, path in NO_TENANT_DATA:
        resp = live.client.request(method, path.replace("{name}", "swagger-ui.css"), headers=t.mine)
        assert resp.status_code in (200, 401), (path, resp.status_code)
        assert not [x for x in t.secrets() if x in resp.text], path
    # another client's token is not the admin's either
    assert live.client.get("/", headers={"Authorization": f"Bearer {t.their_tok['token']}"}).status_code == 404
    hand = _hand_routes()
    assert hand == set(HAND_CASES), f"hand-dispatched paths without a case: {hand - set(HAND_CASES)}; " \
                                    f"stale: {set(HAND_CASES) - hand}"
    for path, hand_check in HAND_CASES.items():
        hand_check(live, t, path)

    _theirs_unchanged(live, t)


# --- the console ------------------------------------------------------------------------------------


@dataclass
class Session:
    """acme's signed-in console session over plain HTTP, and the CSRF token of its pages."""

    c: httpx.Client
    csrf: str
    t: Tenants

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.c.get(path, params=params)

    def post(self, path: str, **form: str) -> httpx.Response:
        return self.c.post(path, data={"csrf": self.csrf, **form})

    def clean(self, resp: httpx.Response) -> httpx.Response:
        leaked = [x for x in self.t.secrets() if x in resp.text]
        assert not leaked, (resp.request.url, leaked)
        return resp

    def ok(self, resp: httpx.Response) -> str:
        assert resp.status_code == 200, (resp.request.url, resp.status_code)
        return self.clean(resp).text

    def not_found(self, resp: httpx.Response) -> None:
        assert resp.status_code == 404, (resp.request.url, resp.status_code, resp.text[:300])
        self.clean(resp)


def _login(c: httpx.Client, token: str) -> str:
    page = c.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    r = c.post("/ui/login", data={"csrf": csrf.group(1), "token": token, "next": "/ui/"})
    assert r.status_code == 303 and "hookbay_session=" in r.headers.get("set-cookie", ""), r.text
    home = c.get("/ui/")
    found = re.search(r'name="csrf" value="([^"]+)"', home.text)
    assert home.status_code == 200 and found
    return found.group(1)


def _ui_tail(s: Session) -> None:
    s.ok(s.get("/ui/"))
    s.not_found(s.get("/ui/", source=s.t.theirs["id"]))
    # free text (a part of globex's email: the page repeats the query) and every other filter search only
    # acme's requests
    found = s.ok(s.get("/ui/", q=CONTACT["Email"][:8], range="7d", verdict="accepted", status="200"))
    assert s.t.rid not in found and 'data-id="req_' not in found
    assert s.t.rid not in s.ok(s.get("/ui/", q=CONTACT["Email"][:8], after="req_0"))


def _ui_tail_json(s: Session) -> None:
    r = s.get("/ui/api/requests")
    assert r.status_code == 200 and r.json()["items"] == []
    s.clean(r)
    assert s.get("/ui/api/requests", q=CONTACT["Email"][:8]).json()["items"] == []
    s.not_found(s.get("/ui/api/requests", source=s.t.theirs["id"]))


def _ui_sources(s: Session) -> None:
    assert s.t.mine_relay["name"] in s.ok(s.get("/ui/sources"))


def _ui_create_source(s: Session) -> None:
    """A client token's form cannot name another client: the source is made for acme."""
    r = s.post("/ui/sources", name="planted", client_id="globex")
    assert r.status_code in (200, 303), r.text[:300]
    made = [x for x in s.c.get("/api/v1/sources", headers=ADMIN).json() if x["name"] == "planted"]
    assert [x["client_id"] for x in made] == ["acme"]


def _ui_playground(s: Session) -> None:
    s.ok(s.get("/ui/playground"))
    s.not_found(s.post("/ui/playground", source=s.t.theirs["id"], body="{}", content_type="application/json"))


def _ui_profiles(s: Session) -> None:
    s.ok(s.get("/ui/profiles"))
    found = s.get("/ui/profiles", q="iso@example.com")  # the page repeats the query: look for the profile
    assert found.status_code == 200 and s.t.pid not in found.text
    assert "No profile has that email." in found.text
    by_name = s.get("/ui/profiles", q="Isolde")  # globex's customer's first name
    assert by_name.status_code == 200 and s.t.pid not in by_name.text and "No profile has a first" in by_name.text


def _ui_deliveries(s: Session) -> None:
    s.ok(s.get("/ui/deliveries"))
    found = s.ok(s.get("/ui/deliveries", state="dead", destination="127.0.0.1", error="public", range="7d"))
    assert s.t.dlv["id"] not in found
    s.not_found(s.get("/ui/deliveries", source=s.t.theirs["id"]))


def _ui_bulk_requests(s: Session) -> None:
    """acme's bulk runs count and touch only acme's requests; a forged source filter is a 404."""
    for action in ("replay", "redeliver"):
        page = s.ok(s.get("/ui/bulk/requests", action=action))
        assert "Nothing matches" in page
        s.not_found(s.get("/ui/bulk/requests", action=action, source=s.t.theirs["id"]))
        done = s.ok(s.post("/ui/bulk/requests", action=action, total="10000"))
        assert "of 0 request(s)" in done
        s.not_found(s.post("/ui/bulk/requests", action=action, source=s.t.theirs["id"]))
        # a forged cursor only moves the window: still acme's requests only
        assert "of 0 request(s)" in s.ok(s.post("/ui/bulk/requests", action=action, cursor="req_zzzz"))


def _ui_bulk_deliveries(s: Session) -> None:
    """acme's bulk retry leaves globex's dead letter dead (checked in _theirs_unchanged)."""
    assert "Nothing matches" in s.ok(s.get("/ui/bulk/deliveries", state="dead"))
    s.not_found(s.get("/ui/bulk/deliveries", source=s.t.theirs["id"]))
    assert "0 of 0 delivery(ies)" in s.ok(s.post("/ui/bulk/deliveries", state="dead", cursor="dlv_zzzz"))
    s.not_found(s.post("/ui/bulk/deliveries", source=s.t.theirs["id"]))


def _ui_tokens(s: Session) -> None:
    """Tokens are the admin's: a client session neither lists nor creates one."""
    r = s.get("/ui/tokens")
    assert r.status_code == 403 and s.t.their_tok["id"] not in s.clean(r).text
    assert s.post("/ui/tokens", name="planted", client_id="globex").status_code == 403
    assert s.post("/ui/tokens/relay", source_id=s.t.theirs["id"], name="planted").status_code == 403


def _ui_alerts(s: Session) -> None:
    """globex's rule and its open alert are not on acme's page; naming the rule is a 404."""
    page = s.ok(s.get("/ui/alerts"))
    assert "No rules." in page and 'id="empty"' in page
    s.ok(s.get("/ui/alerts", state="open"))
    s.not_found(s.get("/ui/alerts", rule=s.t.their_rule["id"]))


def _ui_audit(s: Session) -> None:
    """Only acme's entries, whatever client, actor or action the URL names; globex's source as the
    target finds nothing (the page repeats the query, so the rows are looked at)."""
    s.ok(s.get("/ui/audit"))
    for q in ({"client": "globex"}, {"actor": "admin", "action": "source."}):
        assert "<td>globex</td>" not in s.ok(s.get("/ui/audit", **q))
    r = s.get("/ui/audit", target=s.t.theirs["id"])
    assert r.status_code == 200 and 'data-id="aud_' not in r.text and "No entry matches" in r.text


def _ui_charts(s: Session) -> None:
    """globex's rejected request is counted on globex's charts only."""
    assert "No rejected requests." in s.ok(s.get("/ui/charts"))


def _by_id(method: str, form: dict[str, str] | None = None) -> Callable[[Session, str], None]:
    def check(s: Session, url: str) -> None:
        s.not_found(s.get(url) if method == "get" else s.post(url, **(form or {})))

    return check


def _ui_replay(s: Session, url: str) -> None:
    """Neither the dry run nor its apply step (with any digest) reaches globex's request."""
    s.not_found(s.post(url))
    s.not_found(s.post(url, apply="1", digest="0" * 32))


def _ui_redeliver(s: Session, url: str) -> None:
    """globex's request with its own delivery's id: a 404, and the dead letter stays dead."""
    s.not_found(s.post(url, ids=s.t.dlv["id"]))


def _ui_mapping(s: Session, url: str) -> None:
    """Neither a preview, a save nor a draft that does not parse reaches globex's source."""
    draft = "version: 1\ntarget: record\nfields:\n  A: {expr: a}\n"
    for action in ("preview", "save"):
        s.not_found(s.post(url, action=action, draft=draft, body="{}"))
    s.not_found(s.post(url, action="preview", draft="version: [1"))


def _ui_revoke_relay(s: Session, url: str) -> None:
    """globex's relay token, named with globex's source or with acme's own: a 404, and it stays."""
    s.not_found(s.post(url, source_id=s.t.theirs["id"]))
    s.not_found(s.post(url, source_id=s.t.mine_relay["id"]))


def _ui_erase(s: Session, url: str) -> None:
    """Even confirmed with its own id, globex's profile is not erased (checked in _theirs_unchanged)."""
    s.not_found(s.post(url, confirm=s.t.pid))


UI_PARAM_CASES: dict[tuple[str, str], Callable[[Session, str], None]] = {
    ("get", "/ui/requests/{request_id}"): _by_id("get"),
    ("get", "/ui/requests/{request_id}/body"): _by_id("get"),
    ("post", "/ui/requests/{request_id}/replay"): _ui_replay,
    ("get", "/ui/requests/{request_id}/redeliver"): _by_id("get"),
    ("post", "/ui/requests/{request_id}/redeliver"): _ui_redeliver,
    ("post", "/ui/requests/{request_id}/resend"): _by_id("post", {"url": "http://192.0.2.1/"}),
    ("get", "/ui/sources/{source_id}"): _by_id("get"),
    ("post", "/ui/sources/{source_id}"): _by_id("post", {"name": "stolen", "enabled": "false"}),
    ("post", "/ui/sources/{source_id}/rotate"): _by_id("post", {"grace_seconds": "0"}),
    ("post", "/ui/sources/{source_id}/api-key"): _by_id("post"),
    ("get", "/ui/sources/{source_id}/settings"): _by_id("get"),
    ("post", "/ui/sources/{source_id}/settings"): _by_id("post", {"base": "{}", "sig_scheme": "", "rate": "1"}),
    ("get", "/ui/sources/{source_id}/delete"): _by_id("get"),
    ("post", "/ui/sources/{source_id}/delete"): _by_id("post", {"confirm_name": THEIR_SOURCE}),
    ("get", "/ui/sources/{source_id}/mapping"): _by_id("get"),
    ("post", "/ui/sources/{source_id}/mapping"): _ui_mapping,
    ("post", "/ui/sources/{source_id}/mapping/replay"): _by_id("post"),
    ("get", "/ui/profiles/{profile_id}"): _by_id("get"),
    ("get", "/ui/profiles/{profile_id}/export"): _by_id("get"),
    ("get", "/ui/profiles/{profile_id}/erase"): _by_id("get"),
    ("post", "/ui/profiles/{profile_id}/erase"): _ui_erase,
    ("get", "/ui/deliveries/{delivery_id}"): _by_id("get"),
    ("post", "/ui/deliveries/{delivery_id}/retry"): _by_id("post"),
    ("post", "/ui/tokens/{token_id}/revoke"): _by_id("post"),
    ("post", "/ui/tokens/relay/{relay_token_id}/revoke"): _ui_revoke_relay,
}
UI_COLLECTION_CASES: dict[tuple[str, str], Callable[[Session], None]] = {
    ("get", "/ui/"): _ui_tail,
    ("get", "/ui/api/requests"): _ui_tail_json,
    ("get", "/ui/sources"): _ui_sources,
    ("post", "/ui/sources"): _ui_create_source,
    ("get", "/ui/playground"): _ui_playground,
    ("post", "/ui/playground"): _ui_playground,
    ("get", "/ui/profiles"): _ui_profiles,
    ("get", "/ui/deliveries"): _ui_deliveries,
    ("get", "/ui/bulk/requests"): _ui_bulk_requests,
    ("post", "/ui/bulk/requests"): _ui_bulk_requests,
    ("get", "/ui/bulk/deliveries"): _ui_bulk_deliveries,
    ("post", "/ui/bulk/deliveries"): _ui_bulk_deliveries,
    ("get", "/ui/charts"): _ui_charts,
    ("get", "/ui/alerts"): _ui_alerts,
    ("get", "/ui/audit"): _ui_audit,
    ("get", "/ui/tokens"): _ui_tokens,
    ("post", "/ui/tokens"): _ui_tokens,
    ("post", "/ui/tokens/relay"): _ui_tokens,
}
UI_NO_TENANT_DATA = {
    ("get", "/ui"): "a redirect to /ui/",
    ("get", "/ui/login"): "the login form, before any session",
    ("post", "/ui/login"): "checks the pasted token, starts a session",
    ("post", "/ui/logout"): "ends the caller's own session",
    ("mount", "/ui/static"): "the console's CSS and JavaScript files",
}


def _console_routes(app: Any) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for r in app.console.app.routes:
        if isinstance(r, Mount):
            out.add(("mount", r.path))
        else:
            assert isinstance(r, Route), f"a {type(r).__name__} in the console's route table: give it a case"
            out |= {(m.lower(), r.path) for m in (r.methods or ()) if m != "HEAD"}
    return out


def test_every_console_page_hides_other_clients_objects(live) -> None:  # type: ignore[no-untyped-def]
    """The console with a client token, over plain HTTP with its session cookie: every page of its
    route table has a case. Another client's object by id is a 404 page that names nothing of it;
    lists, search, charts and bulk actions cover only the token's client; nothing of theirs changes."""
    t = _globex_and_acme(live)
    keyed = live.create_source(name="Globex keyed", client_id="globex", api_key=True)
    assert live.client.post(f"/V1/Data/{keyed['token']}", json=CONTACT).status_code == 401  # a rejected request
    routes = _console_routes(live.app)
    cases = [set(UI_PARAM_CASES), set(UI_COLLECTION_CASES), set(UI_NO_TENANT_DATA)]
    assert sum(len(c) for c in cases) == len(set().union(*cases)), "a page is in two case lists"
    missing, stale = routes - set().union(*cases), set().union(*cases) - routes
    assert not missing, f"console pages without a tenant-isolation case: {sorted(missing)}"
    assert not stale, f"cases for console pages that no longer exist: {sorted(stale)}"

    with httpx.Client(base_url=live.url, timeout=15) as c:
        s = Session(c, _login(c, t.tok), t)
        for (_, path), check in UI_PARAM_CASES.items():
            check(s, re.sub(r"\{(\w+)\}", lambda m: t.ids[m.group(1)], path))
        for check_list in UI_COLLECTION_CASES.values():
            check_list(s)
        for method, path in UI_NO_TENANT_DATA:
            if method == "get":
                s.clean(s.get(path))
        s.clean(s.get("/ui/static/console.css"))
        assert s.get("/ui/").status_code == 200  # still signed in: every refusal above was the filter's
    with httpx.Client(base_url=live.url, timeout=15) as admin:  # the same pages show globex to the admin
        _login(admin, ADMIN_TOKEN)
        assert THEIR_SOURCE in admin.get("/ui/sources").text
        assert admin.get(f"/ui/profiles/{t.pid}").status_code == 200
        assert t.pid in admin.get("/ui/profiles", params={"q": "Isolde"}).text
        assert t.rid in admin.get("/ui/api/requests").text
        assert "No rejected requests." not in admin.get("/ui/charts").text
        assert 'data-id="aud_' in admin.get("/ui/audit", params={"target": t.theirs["id"]}).text
        assert t.alert_id in admin.get("/ui/alerts", params={"rule": t.their_rule["id"]}).text
    _theirs_unchanged(live, t)
