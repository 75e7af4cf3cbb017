"""The CLI as a user runs it: a subprocess against the same database as a running server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, cli_migrate, free_port


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_PORT": str(free_port()),
                "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN, "HOOKBAY_LOG_LEVEL": "warning",
                "HOOKBAY_SOURCE_REFRESH_SECONDS": "0.1", "HOOKBAY_WORKER_POLL_SECONDS": "0.2"})
    return cli_migrate(env)


def hb(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True, timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr + p.stdout
    return p


def start_server(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """``hookbay serve`` as a user starts it, once it answers /healthz."""
    server = subprocess.Popen([sys.executable, "-m", "hookbay", "serve"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{env['HOOKBAY_PORT']}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def test_source_lifecycle(cli_env: dict[str, str]) -> None:
    out = orjson.loads(hb(cli_env, "source", "create", "--name", "Web Form", "--client", "acme", "--api-key",
                          "--json").stdout)
    port = cli_env["HOOKBAY_PORT"]
    assert out["ingest_url"] == f"http://127.0.0.1:{port}/V1/Data/{out['token']}"
    assert out["api_key"].startswith("hbk_") and out["api_key_required"]
    dup = hb(cli_env, "source", "create", "--name", "Web Form", "--client", "acme", "--json", ok=False)
    assert dup.returncode == 1 and orjson.loads(dup.stdout)["error"]["code"] == "conflict"

    listed = orjson.loads(hb(cli_env, "source", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [out["id"]] and listed[0]["api_key"] is None
    shown = orjson.loads(hb(cli_env, "source", "show", "Web Form", "--json").stdout)
    assert shown["token"] == out["token"]
    upd = orjson.loads(hb(cli_env, "source", "update", out["id"], "--format", "json", "--allow-method", "POST",
                          "--allow-method", "PUT", "--disable", "--remove-api-key", "--json").stdout)
    assert upd["config"]["format"] == "json" and upd["config"]["methods"] == ["POST", "PUT"]
    assert upd["enabled"] is False and upd["api_key_required"] is False
    bad = hb(cli_env, "source", "update", out["id"], "--format", "yaml", ok=False)
    assert bad.returncode == 2
    hb(cli_env, "source", "delete", out["id"])
    assert orjson.loads(hb(cli_env, "source", "list", "--json").stdout) == []
    missing = hb(cli_env, "source", "show", out["id"], "--json", ok=False)
    assert missing.returncode == 1 and orjson.loads(missing.stdout)["error"]["code"] == "not_found"


def test_source_apply_is_idempotent(cli_env: dict[str, str], tmp_path: Path) -> None:
    f = tmp_path / "sources.yaml"
    f.write_text(
        "sources:\n"
        "  - {name: Shop, client_id: acme, config: {format: json}}\n"
        "  - {name: POS, client_id: acme, api_key: true}\n"
    )
    first = orjson.loads(hb(cli_env, "source", "apply", str(f), "--json").stdout)["results"]
    assert [r["action"] for r in first] == ["created", "created"]
    assert first[1]["api_key"]
    second = orjson.loads(hb(cli_env, "source", "apply", str(f), "--json").stdout)["results"]
    assert [r["action"] for r in second] == ["unchanged", "unchanged"]
    assert [r["token"] for r in second] == [r["token"] for r in first]
    f.write_text(f.read_text().replace("format: json", "format: form"))
    third = orjson.loads(hb(cli_env, "source", "apply", str(f), "--json").stdout)["results"]
    assert [r["action"] for r in third] == ["updated", "unchanged"]
    assert third[0]["config"]["format"] == "form"
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: X, client_id: acme, config: {format: nope}}\n")
    assert hb(cli_env, "source", "apply", str(bad), ok=False).returncode == 2


def test_serve_requests_and_follow(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = orjson.loads(hb(cli_env, "source", "create", "--name", "F", "--client", "acme", "--json").stdout)
    log = (tmp_path / "serve.log").open("wb")
    server = start_server(cli_env, log)
    follower = None
    try:
        follower = subprocess.Popen([sys.executable, "-m", "hookbay", "requests", "--follow", "--json"],
                                    env=cli_env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        r = httpx.post(src["ingest_url"], json={"email": "f@x.io"})
        assert r.status_code == 200
        rid = r.json()["request_id"]
        line = follower.stdout.readline()  # type: ignore[union-attr]
        assert orjson.loads(line)["id"] == rid
        # a source created by the CLI while the server runs is live within a second
        late = orjson.loads(hb(cli_env, "source", "create", "--name", "Late", "--client", "acme", "--json").stdout)
        deadline = time.monotonic() + 5
        while httpx.post(late["ingest_url"], json={}).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        listed = orjson.loads(hb(cli_env, "requests", "--source", "F", "--json").stdout)
        assert [x["id"] for x in listed] == [rid]
        shown = orjson.loads(hb(cli_env, "requests", "show", rid, "--json").stdout)
        assert shown["body"] == '{"email":"f@x.io"}'
        text = hb(cli_env, "requests", "show", rid).stdout
        assert rid in text and "f@x.io" in text
        second = httpx.post(src["ingest_url"], content=b"\xff raw", headers={"Content-Type": "text/plain"})
        dump = tmp_path / "log.ndjson"
        hb(cli_env, "requests", "export", "--source", "F", "--out", str(dump))
        lines = [orjson.loads(x) for x in dump.read_bytes().splitlines()]
        assert [x["id"] for x in lines] == [rid, second.json()["request_id"]]
        import base64

        assert base64.b64decode(lines[1]["body_base64"]) == b"\xff raw" and lines[1]["body"] is None
        assert lines[0]["records"] and lines[0]["headers"]
    finally:
        if follower is not None:
            follower.kill()
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_token_create_gives_a_client_scoped_token(cli_env: dict[str, str]) -> None:
    out = orjson.loads(hb(cli_env, "token", "create", "--name", "ci", "--client", "acme", "--json").stdout)
    assert out["token"].startswith("hbt_") and out["client_id"] == "acme"


def test_security_flags_yaml_and_secrets_stay_secret(cli_env: dict[str, str], tmp_path: Path) -> None:
    import hashlib
    import hmac

    out = orjson.loads(hb(cli_env, "source", "create", "--name", "GH", "--client", "acme", "--signature", "github",
                          "--secret", "cli-secret-value-42", "--allow-ip", "127.0.0.0/8", "--allow-ip", "::1/128",
                          "--require-header", "X-Shop: 7", "--rate", "5", "--burst", "9", "--json").stdout)
    cfg = out["config"]
    assert cfg["signature"]["scheme"] == "github" and cfg["allow_ips"] == ["127.0.0.0/8", "::1/128"]
    assert cfg["required_headers"] == {"x-shop": "7"} and cfg["rate"] == 5 and cfg["burst"] == 9
    assert out["signing_secrets"] == 1 and out["secret"] is None
    shown = hb(cli_env, "source", "show", "GH", "--json").stdout
    assert "cli-secret-value-42" not in shown
    rot = orjson.loads(hb(cli_env, "source", "rotate", "GH", "--grace", "1h", "--json").stdout)
    assert rot["signing_secrets"] == 2 and rot["secret"]
    f = tmp_path / "s.yaml"
    f.write_text("sources:\n  - name: Hooks\n    client_id: acme\n    secret: yaml-secret-value-99\n"
                 "    config: {signature: {scheme: hmac, header: X-Sig, algorithm: sha1, encoding: base64}}\n")
    applied = orjson.loads(hb(cli_env, "source", "apply", str(f), "--json").stdout)["results"]
    assert applied[0]["action"] == "created" and applied[0]["signing_secrets"] == 1
    assert "yaml-secret-value-99" not in hb(cli_env, "source", "apply", str(f), "--json").stdout

    log = tmp_path / "serve.log"
    server = start_server({**cli_env, "HOOKBAY_LOG_LEVEL": "info"}, log.open("wb"))
    try:
        body = b'{"a":1}'
        good = "sha256=" + hmac.new(b"cli-secret-value-42", body, hashlib.sha256).hexdigest()
        url = out["ingest_url"]
        assert httpx.post(url, content=body, headers={"X-Hub-Signature-256": good, "X-Shop": "7"}).status_code == 200
        bad = httpx.post(url, content=body, headers={"X-Hub-Signature-256": "sha256=00", "X-Shop": "7"})
        assert bad.status_code == 401 and "cli-secret-value-42" not in bad.text
        assert httpx.post(url, content=body, headers={"X-Hub-Signature-256": good}).status_code == 403
    finally:
        server.terminate()
        server.wait(timeout=20)
    text = log.read_text()
    assert "ingest_rejected" in text and "rule=signature" in text.replace('"rule": "signature"', "rule=signature")
    assert "cli-secret-value-42" not in text and "yaml-secret-value-99" not in text


def test_admin_token_generated_once_rotated_and_tokens_revoked(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k != "HOOKBAY_ADMIN_TOKEN"}
    base = f"http://127.0.0.1:{env['HOOKBAY_PORT']}"
    log1 = tmp_path / "first.log"
    server = start_server(env, log1.open("wb"))
    server.terminate()
    server.wait(timeout=20)
    printed = [line for line in log1.read_text().splitlines() if "generated admin token" in line]
    assert len(printed) == 1
    first = printed[0].rsplit(" ", 1)[1]
    log2 = tmp_path / "second.log"
    server = start_server(env, log2.open("wb"))
    try:
        assert "generated admin token" not in log2.read_text()  # printed once, on the first start only
        auth = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
        assert httpx.get(base + "/api/v1/sources", headers=auth(first)).status_code == 200

        tok = orjson.loads(hb(env, "token", "create", "--name", "ci", "--json").stdout)
        assert httpx.get(base + "/api/v1/sources", headers=auth(tok["token"])).status_code == 200
        listed = orjson.loads(hb(env, "token", "list", "--json").stdout)
        assert [t["id"] for t in listed] == [tok["id"]] and "token" not in listed[0]
        hb(env, "token", "revoke", tok["id"])
        assert httpx.get(base + "/api/v1/sources", headers=auth(tok["token"])).status_code == 401

        new = orjson.loads(hb(env, "token", "rotate-admin", "--json").stdout)["admin_token"]
        deadline = time.monotonic() + 10
        while httpx.get(base + "/api/v1/sources", headers=auth(new)).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(base + "/api/v1/sources", headers=auth(first)).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert hb(cli_env, "token", "rotate-admin", ok=False).returncode == 2


def test_actions_from_file_and_deliveries_commands(cli_env: dict[str, str], tmp_path: Path) -> None:
    from tests.fakes.receiver import Receiver

    rcv = Receiver(default_status=400).start()
    actions = tmp_path / "actions.yaml"
    actions.write_text(f"- type: forward\n  name: crm\n  url: {rcv.url}/in\n  when: email != null\n")
    src = orjson.loads(hb(cli_env, "source", "create", "--name", "A", "--client", "acme", "--actions", str(actions),
                          "--allow-private-destinations", "--json").stdout)
    assert src["config"]["actions"][0]["name"] == "crm" and src["config"]["allow_private_destinations"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- type: forward\n  url: gopher://x\n")
    refused = hb(cli_env, "source", "update", "A", "--actions", str(bad), ok=False)
    assert refused.returncode == 2 and "url" in refused.stderr
    log = (tmp_path / "serve.log").open("wb")
    server = start_server(cli_env, log)
    try:
        rid = httpx.post(src["ingest_url"], json={"email": "d@x.io"}).json()["request_id"]
        httpx.post(src["ingest_url"], json={"other": 1})  # condition false: no delivery
        deadline = time.monotonic() + 15
        while True:
            dead = orjson.loads(hb(cli_env, "deliveries", "list", "--state", "dead", "--json").stdout)
            if dead:
                break
            assert time.monotonic() < deadline, "no dead letter"
            time.sleep(0.2)
        [d] = dead
        assert d["request_id"] == rid and d["last_status"] == 400 and d["action_name"] == "crm"
        shown = hb(cli_env, "deliveries", "show", d["id"]).stdout
        assert "fail" in shown and "400" in shown
        assert hb(cli_env, "deliveries", "retry", ok=False).returncode == 2
        rcv.default_status = 204
        out = orjson.loads(hb(cli_env, "deliveries", "retry", "--source", "A", "--error", "400", "--json").stdout)
        assert out == {"count": 1, "ids": [d["id"]]}
        deadline = time.monotonic() + 15
        while orjson.loads(hb(cli_env, "deliveries", "show", d["id"], "--json").stdout)["state"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert [r.path for r in rcv.received] == ["/in", "/in"]
        assert "succeeded" in hb(cli_env, "deliveries", "list", "--source", "A").stdout
        again = orjson.loads(hb(cli_env, "deliveries", "retry", d["id"], "--json").stdout)  # by id: any finished state
        assert again == {"count": 1, "ids": [d["id"]]}
        deadline = time.monotonic() + 15
        while len(rcv.received) < 3:
            assert time.monotonic() < deadline, "the retried delivery was not sent again"
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        rcv.stop()


def test_purge_reports_bodies_and_acked_relay_messages(cli_env: dict[str, str]) -> None:
    out = orjson.loads(hb(cli_env, "purge", "--dry-run", "--json").stdout)
    assert out == {"dry_run": True, "partitions": [], "bodies": {}, "relay_acked": 0}
    text = hb(cli_env, "purge").stdout
    assert "purged 0 raw bodies" in text and "0 acked relay message(s)" in text


def test_source_apply_plans_and_never_silently_weakens(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The sequence in docs/sources.md (`source apply`): sources created with signatures, then a file without them."""
    hb(cli_env, "source", "create", "--name", "Shop", "--client", "acme", "--signature", "shopify",
       "--secret", "shpss_0123456789abcdef", "--allow-ip", "127.0.0.0/8")
    hb(cli_env, "source", "create", "--name", "Old", "--client", "acme")
    f = tmp_path / "sources.yaml"
    f.write_text("sources:\n  - {name: Shop, client_id: acme, config: {format: json}}\n"
                 "  - {name: New, client_id: acme}\n")
    refused = hb(cli_env, "source", "apply", str(f), ok=False)
    assert refused.returncode == 1
    assert "REFUSED: signature: signature check removed" in refused.stdout
    assert "REFUSED: allow_ips: IP allowlist removed" in refused.stdout
    assert "nothing applied" in refused.stderr
    shown = orjson.loads(hb(cli_env, "source", "show", "Shop", "--json").stdout)
    assert shown["config"]["signature"]["scheme"] == "shopify"
    assert sorted(s["name"] for s in orjson.loads(hb(cli_env, "source", "list", "--json").stdout)) == ["Old", "Shop"]

    f.write_text("sources:\n  - {name: Shop, client_id: acme, config: {format: json, signature: null, allow_ips: []}}\n"
                 "  - {name: New, client_id: acme}\n")
    dry = orjson.loads(hb(cli_env, "source", "apply", str(f), "--dry-run", "--json").stdout)
    assert dry["applied"] is False
    shop = dry["plan"][0]
    assert shop["action"] == "change" and any(c.startswith("config.format:") for c in shop["changes"])
    assert shop["weakens"] == ["allow_ips: IP allowlist removed", "signature: signature check removed"]
    assert [p["action"] for p in dry["plan"]] == ["change", "create"]
    assert orjson.loads(hb(cli_env, "source", "show", "Shop", "--json").stdout)["config"]["signature"]

    done = orjson.loads(hb(cli_env, "source", "apply", str(f), "--prune", "--json").stdout)
    assert done["applied"] is True
    assert [p["action"] for p in done["plan"]] == ["change", "create", "delete"]
    assert sorted(s["name"] for s in orjson.loads(hb(cli_env, "source", "list", "--json").stdout)) == ["New", "Shop"]
    again = orjson.loads(hb(cli_env, "source", "apply", str(f), "--json").stdout)
    assert [p["action"] for p in again["plan"]] == ["unchanged", "unchanged"]


def test_rotate_api_key_needs_a_key(cli_env: dict[str, str]) -> None:
    hb(cli_env, "source", "create", "--name", "Keyless", "--client", "acme")
    r = hb(cli_env, "source", "rotate", "Keyless", "--api-key", ok=False)
    assert r.returncode == 1 and "source update SOURCE --api-key" in r.stderr
    assert orjson.loads(hb(cli_env, "source", "show", "Keyless", "--json").stdout)["api_key_required"] is False
