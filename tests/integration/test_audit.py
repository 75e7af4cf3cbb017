"""The audit log: every change to sources, secrets, API keys, tokens, relay tokens, encryption keys
and erasures, through the API and the CLI, is recorded with its actor and origin, and never with a
secret value."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from tests.conftest import ADMIN_TOKEN, LiveServer

CONTACT = {"SourceName": "Web", "SourceType": "Form", "Email": "audit@example.com"}
GH_SECRET_1 = "gh-secret-first-AAAA1111"
GH_SECRET_2 = "gh-secret-second-BBBB2222"
HEADER_VALUE = "shared-header-value-CCCC3333"


def table_text(db_url: str) -> str:
    """Every audit row as text, to search for secrets in what is stored (not just what is shown)."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM audit_log")).all()
    finally:
        engine.dispose()
    return "\n".join(repr(tuple(r)) for r in rows)


def all_entries(client: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = client.get("/api/v1/audit", params={"limit": 1000}, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_api_changes_are_audited_with_actor_and_no_secret(live: LiveServer) -> None:
    c = live.client
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = c.post("/api/v1/tokens", json={"name": "acme-ci", "client_id": "acme"}, headers=admin).json()
    acme = {"Authorization": f"Bearer {made['token']}"}
    other = c.post("/api/v1/tokens", json={"name": "spare"}, headers=admin).json()

    src = c.post("/api/v1/sources", headers=acme, json={
        "name": "gh", "client_id": "acme", "api_key": True, "secret": GH_SECRET_1,
        "config": {"signature": {"scheme": "github"}}}).json()
    sid = src["id"]
    secrets_seen = [made["token"], other["token"], src["api_key"], src["token"], GH_SECRET_1, GH_SECRET_2, HEADER_VALUE]
    assert c.patch(f"/api/v1/sources/{sid}", headers=acme,
                   json={"config": {"rate": 5, "required_headers": {"X-Shared": HEADER_VALUE}}}).status_code == 200
    put = c.put(f"/api/v1/sources/{sid}", headers=admin, json={
        "name": "gh2", "enabled": True,
        "config": {"signature": {"scheme": "github"}, "rate": 5, "required_headers": {"X-Shared": HEADER_VALUE}}})
    assert put.status_code == 200, put.text
    assert c.post(f"/api/v1/sources/{sid}/rotate", headers=acme,
                  json={"secret": GH_SECRET_2, "grace_seconds": 0}).status_code == 200
    rotated = c.patch(f"/api/v1/sources/{sid}", headers=acme, json={"rotate_api_key": True}).json()
    secrets_seen.append(rotated["api_key"])
    rt = c.post(f"/api/v1/sources/{sid}/relay-tokens", headers=acme, json={"name": "edge"}).json()
    secrets_seen.append(rt["token"])
    assert c.delete(f"/api/v1/sources/{sid}/relay-tokens/{rt['id']}", headers=acme).status_code == 204
    weak = c.patch(f"/api/v1/sources/{sid}", headers=acme, json={"config": {"signature": None}})
    assert weak.status_code == 200, weak.text

    contact = c.post("/api/v1/sources", headers=acme, json={"name": "form", "client_id": "acme",
                                                            "config": {"parser": "contact"}}).json()
    secrets_seen.append(contact["token"])
    r = c.post(f"/V1/Data/{contact['token']}?wait=1", json=CONTACT)
    pid = r.json()["receipt"]["records"][0]["profile_id"]
    assert c.delete(f"/api/v1/profiles/{pid}", headers=acme).status_code == 200
    assert c.delete(f"/api/v1/sources/{sid}", headers=acme).status_code == 204
    assert c.delete(f"/api/v1/tokens/{other['id']}", headers=admin).status_code == 204
    theirs = live.create_source(client_id="globex", name="globex-src")
    secrets_seen.append(theirs["token"])

    entries = all_entries(c, admin)
    by = [(e["action"], e["actor"], e["target"]) for e in reversed(entries)]
    client = "client:acme"
    assert by == [
        ("token.create", "admin", made["id"]),
        ("token.create", "admin", other["id"]),
        ("source.create", client, sid),
        ("source.patch", client, sid),
        ("source.replace", "admin", sid),
        ("secret.rotate", client, sid),
        ("source.patch", client, sid),
        ("relay_token.create", client, rt["id"]),
        ("relay_token.revoke", client, rt["id"]),
        ("source.patch", client, sid),
        ("source.create", client, contact["id"]),
        ("profile.erase", client, pid),
        ("source.delete", client, sid),
        ("token.revoke", "admin", other["id"]),
        ("source.create", "admin", theirs["id"]),
    ]
    for e in entries:
        assert e["peer"] == "127.0.0.1"
        assert e["token_id"] == (made["id"] if e["actor"] == client else None)
    first = {e["action"]: e for e in entries}  # newest first, so the oldest of each action wins
    assert first["source.create"]["client_id"] == "acme"
    assert "api_key: [set]" in first["source.create"]["changes"]
    assert "secret: [set]" in first["source.create"]["changes"]
    assert 'config.required_headers: {} -> {"x-shared":"[set]"}' in first["source.patch"]["changes"]
    assert 'name: "gh" -> "gh2"' in first["source.replace"]["changes"]
    assert first["secret.rotate"]["changes"][0] == "secret: [changed]"
    assert entries[-7]["changes"] == ["api_key: [changed]"]  # the rotate_api_key PATCH
    # the PATCH removing the signature is marked as weakening the source; the others are not
    weakening = [e for e in entries if e["weakening"]]
    assert [e["action"] for e in weakening] == ["source.patch"]
    assert weakening[0]["weakens"] == ["signature: signature check removed"]
    assert first["token.create"]["client_id"] == "acme" and first["token.revoke"]["client_id"] is None

    # no secret value anywhere: not in the API's answer, not in the table
    shown = c.get("/api/v1/audit", params={"limit": 1000}, headers=admin).text
    stored = table_text(live.settings.effective_database_url)  # type: ignore[attr-defined]
    for secret in secrets_seen:
        assert secret not in shown and secret not in stored, secret

    # a client token sees its own client's entries only; paging walks them all once
    mine = all_entries(c, acme)
    assert mine and {e["client_id"] for e in mine} == {"acme"}
    assert [e["id"] for e in mine] == [e["id"] for e in entries if e["client_id"] == "acme"]
    assert theirs["id"] not in {e["target"] for e in mine}
    pages: list[str] = []
    cursor = None
    while True:
        page = c.get("/api/v1/audit", params={"limit": 4, **({"before": cursor} if cursor else {})},
                     headers=acme).json()
        pages += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [e["id"] for e in mine]
    assert c.get("/api/v1/audit", params={"since": "1h"}, headers=acme).json()["items"][0]["id"] == mine[0]["id"]
    assert c.get("/api/v1/audit", params={"until": "2000-01-01T00:00:00Z"}, headers=admin).json()["items"] == []
    bad = c.get("/api/v1/audit", params={"since": "yesterday-ish"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


def hb(env: dict[str, str], *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr + p.stdout
    return p.stdout


def test_cli_changes_are_audited_as_the_os_user(live: LiveServer, db_url: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
                "HOOKBAY_LOG_LEVEL": "warning", "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    j = lambda *a: orjson.loads(hb(env, *a, "--json"))  # noqa: E731
    src = j("source", "create", "--name", "cli-gh", "--client", "acme", "--signature", "github",
            "--secret", GH_SECRET_1, "--api-key")
    secrets_seen = [src["api_key"], src["token"], GH_SECRET_1, GH_SECRET_2, HEADER_VALUE]
    j("source", "update", "cli-gh", "--rate", "5", "--require-header", f"X-Shared: {HEADER_VALUE}")
    j("source", "rotate", "cli-gh", "--secret", GH_SECRET_2, "--grace", "0")
    secrets_seen.append(j("source", "rotate", "cli-gh", "--api-key")["api_key"])
    j("source", "update", "cli-gh", "--signature", "none")
    plan = tmp_path / "sources.yaml"
    plan.write_text("sources:\n  - name: cli-gh\n    client_id: acme\n    api_key: true\n"
                    "    config: {rate: 7, required_headers: {X-Shared: " + HEADER_VALUE + "}}\n"
                    "  - name: applied\n    client_id: acme\n")
    j("source", "apply", str(plan))
    tok = j("token", "create", "--name", "cli-made", "--client", "acme")
    secrets_seen.append(tok["token"])
    j("token", "revoke", tok["id"])
    rt = j("source", "relay-token", "create", "cli-gh")
    secrets_seen.append(rt["token"])
    j("source", "relay-token", "revoke", "cli-gh", rt["id"])
    admin_tok = orjson.loads(hb({k: v for k, v in env.items() if k != "HOOKBAY_ADMIN_TOKEN"},
                                "token", "rotate-admin", "--json"))["admin_token"]
    secrets_seen.append(admin_tok)

    contact = live.create_source(name="cli-form", config={"parser": "contact"})
    pid = live.client.post(f"/V1/Data/{contact['token']}?wait=1", json=CONTACT).json()["receipt"]["records"][0][
        "profile_id"]
    j("profiles", "erase", pid, "--yes")
    j("source", "delete", "cli-gh")
    key = hb(env, "keys", "generate", "--kid", "k9").strip()
    secrets_seen.append(key.partition(":")[2])
    orjson.loads(hb(env | {"HOOKBAY_ENCRYPTION_KEY": key}, "keys", "rotate", "--json"))

    entries = j("audit")
    cli = f"cli:{getpass.getuser()}"
    ours = [(e["action"], e["target"]) for e in reversed(entries) if e["actor"] == cli]
    assert [a for a, _ in ours] == [
        "source.create", "source.update", "secret.rotate", "api_key.rotate", "source.update",
        "source.apply.update", "source.apply.create", "token.create", "token.revoke", "relay_token.create",
        "relay_token.revoke", "token.rotate_admin", "profile.erase", "source.delete", "keys.reencrypt"]
    assert ours[0][1] == ours[-2][1] == src["id"] and ours[-1][1] == "k9"
    assert {e["peer"] for e in entries if e["actor"] == cli} == {"cli"}
    assert all(e["token_id"] is None for e in entries if e["actor"] == cli)
    mine = {e["action"]: e for e in entries if e["actor"] == cli}
    assert mine["profile.erase"]["client_id"] == "acme" and mine["relay_token.create"]["client_id"] == "acme"
    assert mine["secret.rotate"]["changes"][0] == "secret: [changed]"
    assert "api_key: [changed]" in mine["api_key.rotate"]["changes"]
    assert [e["weakens"] for e in entries if e["weakening"]] == [["signature: signature check removed"]]
    apply_upd = mine["source.apply.update"]
    assert 'config.required_headers: {"X-Shared":"[set]"} -> {"X-Shared":"[set]"}' not in apply_upd["changes"]
    assert "config.rate: 5.0 -> 7.0" in apply_upd["changes"] or "config.rate: 5 -> 7" in apply_upd["changes"]
    assert "active key: k9" in mine["keys.reencrypt"]["changes"]

    human = hb(env, "audit", "--since", "1h")
    assert "WEAKENS: signature: signature check removed" in human and f"by {cli} from cli" in human
    assert orjson.loads(hb(env, "audit", "--client", "globex", "--json")) == []
    stored = table_text(db_url)
    for secret in secrets_seen:
        assert secret not in human and secret not in stored, secret


def test_console_changes_are_audited_with_the_token_and_peer(live: LiveServer) -> None:
    import re

    import httpx

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = live.client.post("/api/v1/tokens", json={"name": "acme-ui", "client_id": "acme"}, headers=admin).json()
    src = live.create_source(name="ui-src", config={"signature": {"scheme": "github"}})
    with httpx.Client(base_url=live.url, timeout=10) as c:
        page = c.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        assert c.post("/ui/login", data={"csrf": csrf.group(1), "token": made["token"], "next": "/ui/"}).status_code == 303
        page = c.get(f"/ui/sources/{src['id']}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        r = c.post(f"/ui/sources/{src['id']}/rotate", data={"csrf": csrf.group(1), "secret": GH_SECRET_1,
                                                             "grace_seconds": "0"})
        assert r.status_code == 200, r.text
        r = c.post(f"/ui/sources/{src['id']}", data={"csrf": csrf.group(1), "name": "ui-renamed", "enabled": "true"})
        assert r.status_code == 303, r.text
    entries = all_entries(live.client, admin)[:2]
    assert [(e["action"], e["actor"], e["token_id"], e["peer"]) for e in entries] == [
        ("source.update", "client:acme", made["id"], "127.0.0.1"),
        ("secret.rotate", "client:acme", made["id"], "127.0.0.1")]
    assert entries[0]["changes"] == ['name: "ui-src" -> "ui-renamed"']
    assert GH_SECRET_1 not in table_text(live.settings.effective_database_url)  # type: ignore[attr-defined]
