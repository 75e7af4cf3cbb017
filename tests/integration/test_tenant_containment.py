"""Issue #11 findings 1, 3 and 7: a client token cannot make the server send its secrets or reach
its network, and cannot raise its body limit past the admin ceiling. Every attack runs against a
live server over loopback, with a real listener that must receive nothing."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from hookbay.store import Store
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.fakes.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
CONTACT = orjson.loads((ROOT / "bench" / "contact.json").read_bytes())
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PROVIDER_KEY = "0123456789abcdef0123456789abcdef-us6"


@pytest.fixture
def listener() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def server_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an operator's environment holds: the admin token, and a provider key under the prefix."""
    monkeypatch.setenv("HOOKBAY_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("HOOKBAY_PROVIDER_MC_ACME", PROVIDER_KEY)


def _client_token(live: Any, client_id: str = "acme") -> dict[str, str]:
    with live.admin() as c:
        tok = c.post("/api/v1/tokens", json={"name": client_id, "client_id": client_id}).json()["token"]
    return {"Authorization": f"Bearer {tok}"}


def _refused(r: httpx.Response, status: int, path: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message", "detail"}
    assert path in [d["path"] for d in err["detail"]], err


def _wait_deliveries(live: Any, request_id: str, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    with live.admin() as c:
        while True:
            items = c.get("/api/v1/deliveries", params={"request_id": request_id}).json()["items"]
            if items and all(d["state"] in ("succeeded", "dead", "skipped") for d in items):
                return list(items)
            assert time.monotonic() < deadline, f"deliveries not settled: {items}"
            time.sleep(0.05)


def _attempts(live: Any, delivery_id: str) -> list[dict[str, Any]]:
    with live.admin() as c:
        return list(c.get(f"/api/v1/deliveries/{delivery_id}").json()["attempt_log"])


def _send_and_settle(live: Any, src: dict[str, Any]) -> str:
    body = dict(CONTACT, ProviderType=3, ListIds=["list1"])
    r = live.client.post(f"/V1/Data/{src['token']}", json=body)
    assert r.status_code == 200, r.text
    rid = str(r.json()["request_id"])
    live.wait_state(rid)
    return rid


def test_client_token_cannot_route_a_server_secret_anywhere(live, listener: Receiver, server_secrets: None) -> None:  # type: ignore[no-untyped-def]
    """Finding 1: every way a client token could name a server variable or pick the endpoint a key
    goes to is refused (create, PATCH, console form); the listener receives nothing."""
    mine = _client_token(live)
    steal = {"type": "mailchimp", "api_key_env": "HOOKBAY_ADMIN_TOKEN", "base_url": listener.url + "/3.0",
             "list_ids": ["list1"]}
    attacks = [
        ({"parser": "contact", "allow_private_destinations": True, "actions": [steal]},
         "config.allow_private_destinations"),
        ({"parser": "contact", "actions": [steal]}, "config.actions.0.api_key_env"),
        ({"parser": "contact", "actions": [{"type": "mailchimp", "api_key_env": "HOOKBAY_PROVIDER_MC_ACME"}]},
         "config.actions.0.api_key_env"),
        ({"parser": "contact", "actions": [{"type": "mailchimp", "base_url": listener.url}]},
         "config.actions.0.api_key_env"),
        ({"actions": [{"type": "forward", "url": "https://example.com/", "secret": SECRET,
                       "headers": {"hOsT": "metadata.internal"}}]}, "config.actions.0.headers.Host"),
    ]
    for i, cfg in enumerate(attacks):
        r = live.client.post("/api/v1/sources", headers=mine, json={"name": f"evil-{i}", "client_id": "acme",
                                                                     "config": cfg[0]})
        _refused(r, 403, cfg[1])
        assert r.json()["error"]["code"] == "forbidden"

    # PATCH a source the tenant owns: same refusals, and the stored config is untouched
    own = live.create_source(client_id="acme", config={"parser": "contact"})
    for cfg, path in attacks:
        _refused(live.client.patch(f"/api/v1/sources/{own['id']}", headers=mine, json={"config": cfg}), 403, path)
    # an admin-prepared provider action can be sent back unchanged, but its key cannot go elsewhere
    with live.admin() as c:
        prepared = {"parser": "contact", "actions": [
            {"type": "mailchimp", "api_key_env": "HOOKBAY_PROVIDER_MC_ACME", "list_ids": ["list1"],
             "when": "ProviderType == 99"}]}
        assert c.patch(f"/api/v1/sources/{own['id']}", json={"config": prepared}).status_code == 200
    got = live.client.get(f"/api/v1/sources/{own['id']}", headers=mine).json()["config"]
    got["actions"][0]["name"] = "renamed by the tenant"
    assert live.client.patch(f"/api/v1/sources/{own['id']}", headers=mine, json={"config": got}).status_code == 200
    got["actions"][0]["base_url"] = listener.url + "/3.0"
    _refused(live.client.patch(f"/api/v1/sources/{own['id']}", headers=mine, json={"config": got}), 403,
             "config.actions.0.base_url")
    got["actions"][0]["base_url"] = None
    got["actions"].append({"type": "mailchimp", "api_key_env": "HOOKBAY_ADMIN_TOKEN", "base_url": listener.url})
    _refused(live.client.patch(f"/api/v1/sources/{own['id']}", headers=mine, json={"config": got}), 403,
             "config.actions.1.api_key_env")

    # the console: a tenant's source form carries no action or guard fields, extra ones are ignored
    with httpx.Client(base_url=live.url, timeout=15) as ui:
        tok = mine["Authorization"].split(" ", 1)[1]
        page = ui.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        assert ui.post("/ui/login", data={"csrf": csrf.group(1), "token": tok, "next": "/ui/"}).status_code == 303
        csrf = re.search(r'name="csrf" value="([^"]+)"', ui.get("/ui/sources").text)
        assert csrf
        ui.post("/ui/sources", data={
            "csrf": csrf.group(1), "name": "console-evil", "client_id": "acme", "parser": "contact",
            "allow_private_destinations": "true", "config": orjson.dumps({"actions": [steal]}).decode(),
            "actions": orjson.dumps([steal]).decode(), "api_key_env": "HOOKBAY_ADMIN_TOKEN",
            "base_url": listener.url})
    mine_now = live.client.get("/api/v1/sources", headers=mine).json()
    assert sorted(s["name"] for s in mine_now) == sorted(["console-evil", own["name"]])
    for s in mine_now:
        assert not s["config"]["allow_private_destinations"]
        assert all(a.get("api_key_env") in (None, "HOOKBAY_PROVIDER_MC_ACME") and not a.get("base_url")
                   for a in s["config"]["actions"])
        _send_and_settle(live, s)
    time.sleep(0.5)
    assert listener.received == []


def test_secret_names_are_limited_to_the_prefix_for_admins_too(live, db_url: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              listener: Receiver, server_secrets: None) -> None:
    """An admin cannot name HOOKBAY_ADMIN_TOKEN either (422); a config stored before the rule is
    stopped at send time with a reason that names the variable, never its value."""
    with live.admin() as c:
        for name in ("HOOKBAY_ADMIN_TOKEN", "HOOKBAY_DATABASE_URL", "PATH"):
            r = c.post("/api/v1/sources", json={"name": "x", "client_id": "acme", "config": {
                "actions": [{"type": "mailchimp", "api_key_env": name}]}})
            _refused(r, 422, "config.actions.0.api_key_env")
            assert "HOOKBAY_PROVIDER_" in r.json()["error"]["detail"][0]["message"]
        # the admin may point an allowed key at an override endpoint (here the loopback listener)
        ok = c.post("/api/v1/sources", json={"name": "admin-override", "client_id": "acme", "config": {
            "parser": "contact", "allow_private_destinations": True, "actions": [
                {"type": "mailchimp", "api_key_env": "HOOKBAY_PROVIDER_MC_ACME", "base_url": listener.url + "/3.0",
                 "list_ids": ["list1"]}]}})
        assert ok.status_code == 201, ok.text
    [d] = _wait_deliveries(live, _send_and_settle(live, ok.json()))
    assert d["state"] == "succeeded", d
    sent = base64.b64encode(f"hookbay:{PROVIDER_KEY}".encode()).decode()
    assert {r.headers["authorization"] for r in listener.received} == {f"Basic {sent}"}
    listener.received.clear()

    legacy = live.create_source(client_id="acme", config={"parser": "contact"})
    cfg = {"parser": "contact", "allow_private_destinations": True, "actions": [
        {"type": "mailchimp", "api_key_env": "HOOKBAY_ADMIN_TOKEN", "base_url": listener.url + "/3.0",
         "list_ids": ["list1"]}]}

    async def store_unchecked() -> None:
        store = Store(make_settings(db_url, tmp_path).effective_database_url)
        await store.start()
        try:
            await store.update_source(legacy["id"], {"config": cfg})
        finally:
            await store.close()

    asyncio.run(store_unchecked())
    time.sleep(0.5)  # the server's source cache refreshes every 0.1 s in tests
    [d] = _wait_deliveries(live, _send_and_settle(live, legacy))
    assert d["state"] == "dead"
    [attempt] = _attempts(live, d["id"])
    assert "HOOKBAY_ADMIN_TOKEN" in attempt["error"] and "HOOKBAY_PROVIDER_" in attempt["error"]
    assert ADMIN_TOKEN not in orjson.dumps(attempt).decode()
    time.sleep(0.3)
    assert listener.received == []


def test_tenant_cannot_lift_the_guard_and_loopback_answers_are_not_kept(live, listener: Receiver) -> None:  # type: ignore[no-untyped-def]
    """Finding 3: allow_private_destinations is admin-only; a tenant's forward to 127.0.0.1 is refused
    at send time, nothing reaches the listener and no response excerpt is stored."""
    mine = _client_token(live)
    fwd = {"type": "forward", "url": listener.url + "/metrics", "secret": SECRET}
    r = live.client.post("/api/v1/sources", headers=mine, json={"name": "t", "client_id": "acme", "config": {
        "allow_private_destinations": True, "actions": [fwd]}})
    _refused(r, 403, "config.allow_private_destinations")
    r = live.client.post("/api/v1/sources", headers=mine, json={"name": "t", "client_id": "acme", "config": {
        "actions": [fwd]}})
    assert r.status_code == 201, r.text
    src = r.json()
    _refused(live.client.patch(f"/api/v1/sources/{src['id']}", headers=mine, json={"config": {
        "allow_private_destinations": True, "actions": [fwd]}}), 403, "config.allow_private_destinations")
    # an admin let a source reach one private destination: the tenant cannot repoint it
    approved = live.create_source(client_id="acme", config={"allow_private_destinations": True, "actions": [
        dict(fwd, url="http://10.1.2.3/crm")]})
    moved = dict(approved["config"], actions=[dict(approved["config"]["actions"][0], url=listener.url + "/metrics")])
    _refused(live.client.patch(f"/api/v1/sources/{approved['id']}", headers=mine, json={"config": moved}), 403,
             "config.actions.0.url")
    kept = dict(approved["config"], actions=[dict(approved["config"]["actions"][0], name="crm")])
    assert live.client.patch(f"/api/v1/sources/{approved['id']}", headers=mine,
                             json={"config": kept}).status_code == 200
    [d] = _wait_deliveries(live, _send_and_settle(live, src))
    assert d["state"] == "dead"
    [attempt] = _attempts(live, d["id"])
    assert "not a public address" in attempt["error"]
    assert attempt["response_excerpt"] is None and attempt["status"] is None
    assert listener.received == []


def test_answer_from_a_private_peer_is_discarded(live, listener: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A DNS answer that changes between the guard's check and the connect (rebinding) still keeps
    the private answer out of the delivery log: the connected address is checked too."""
    async def passes(url: str, *, allow_private: bool, resolve_timeout: float = 10.0) -> None:
        return None  # as if the name resolved to a public address when checked

    monkeypatch.setattr("hookbay.actions.forward.check_destination", passes)
    src = live.create_source(client_id="acme", config={"actions": [
        {"type": "forward", "url": listener.url + "/metrics", "secret": SECRET}]})
    [d] = _wait_deliveries(live, _send_and_settle(live, src))
    assert d["state"] == "dead"
    [attempt] = _attempts(live, d["id"])
    assert "discarded" in attempt["error"] and attempt["response_excerpt"] is None


def test_client_body_limit_is_bounded_by_the_admin_ceiling(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    """Finding 7: a client token may set max_body_bytes up to HOOKBAY_MAX_BODY_BYTES_LIMIT; an admin
    may go higher, and the tenant can keep (not raise) what the admin set."""
    mib = 1024 * 1024
    live = live_server_factory(db_url, max_body_bytes_limit=2 * mib)
    mine = _client_token(live)
    r = live.client.post("/api/v1/sources", headers=mine, json={"name": "big", "client_id": "acme",
                                                                 "config": {"max_body_bytes": 64 * mib}})
    _refused(r, 422, "config.max_body_bytes")
    assert "HOOKBAY_MAX_BODY_BYTES_LIMIT" in r.json()["error"]["detail"][0]["message"]
    r = live.client.post("/api/v1/sources", headers=mine, json={"name": "ok", "client_id": "acme",
                                                                 "config": {"max_body_bytes": 2 * mib}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    _refused(live.client.patch(f"/api/v1/sources/{sid}", headers=mine,
                               json={"config": {"max_body_bytes": 2 * mib + 1}}), 422, "config.max_body_bytes")
    with live.admin() as c:
        assert c.patch(f"/api/v1/sources/{sid}", json={"config": {"max_body_bytes": 8 * mib}}).status_code == 200
    keep = live.client.patch(f"/api/v1/sources/{sid}", headers=mine,
                             json={"config": {"max_body_bytes": 8 * mib, "format": "json"}})
    assert keep.status_code == 200, keep.text
    _refused(live.client.patch(f"/api/v1/sources/{sid}", headers=mine,
                               json={"config": {"max_body_bytes": 9 * mib}}), 422, "config.max_body_bytes")


def test_cli_apply_refuses_a_server_setting_as_a_key(tmp_path: Path) -> None:
    """`source apply` acts as the admin (it opens the database): the prefix rule still holds."""
    doc = tmp_path / "sources.yaml"
    doc.write_text("sources:\n  - name: a\n    client_id: acme\n    config:\n      actions:\n"
                   "        - type: mailchimp\n          api_key_env: HOOKBAY_ADMIN_TOKEN\n")
    env = {"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "hookbay", "source", "apply", str(doc)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "sources.0.config.actions.0.api_key_env" in p.stderr and ADMIN_TOKEN not in p.stderr
    assert not (tmp_path / "hookbay.db").exists()


def test_prefix_cannot_cover_server_settings() -> None:
    from pydantic import ValidationError

    from hookbay.settings import Settings

    for prefix in ("HOOKBAY_", "HOOKBAY_ADMIN_", "HOOKBAY_SMTP_"):
        with pytest.raises(ValidationError, match="would expose server settings"):
            Settings(secret_env_prefix=prefix)
    assert Settings(secret_env_prefix="ACME_KEYS_").secret_env_prefix == "ACME_KEYS_"
