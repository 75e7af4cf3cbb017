"""The edge settings as a tenant sets them (issue #15): hostile values refused, loosening a browser
check counts as weakening (PUT must name it), and the CLI flags of `source create/update`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import cli_migrate

FORM = {"allowed_origins": ["https://shop.example.com"], "honeypot_field": "website", "rate_per_ip": 1,
        "burst_per_ip": 5, "redirect_url": "https://shop.example.com/thanks"}


@pytest.mark.parametrize("field, dropped", [
    ("allowed_origins", {"allowed_origins": []}),
    ("allowed_origins", {"allowed_origins": ["https://shop.example.com", "*"]}),
    ("honeypot_field", {"honeypot_field": None}),
    ("rate_per_ip", {"rate_per_ip": None}),
    ("burst_per_ip", {"burst_per_ip": 50}),
])
def test_put_must_name_a_loosened_browser_check(live: Any, field: str, dropped: dict[str, Any]) -> None:
    src = live.create_source(config=FORM)
    implicit = {k: v for k, v in FORM.items() if k not in dropped}
    with live.admin() as c:
        if all(v is None for v in dropped.values()):
            r = c.put(f"/api/v1/sources/{src['id']}", json={"name": src["name"], "config": implicit})
            assert r.status_code == 409, r.text
            assert [d["path"] for d in r.json()["error"]["detail"]] == [f"config.{field}"]
        r = c.put(f"/api/v1/sources/{src['id']}", json={"name": src["name"], "config": {**implicit, **dropped}})
        assert r.status_code == 200, r.text
        audit = c.get("/api/v1/audit", params={"limit": 1}).json()["items"][0]
    assert audit["target"] == src["id"] and field in orjson.dumps(audit["weakens"]).decode(), audit


def test_patch_changes_only_the_edge_field_it_names(live: Any) -> None:
    src = live.create_source(config=FORM)
    with live.admin() as c:
        r = c.patch(f"/api/v1/sources/{src['id']}", json={"config": {"idempotency_key": "stripe"}})
        assert r.status_code == 200, r.text
        cfg = r.json()["config"]
    assert {k: cfg[k] for k in FORM} == {**FORM, "rate_per_ip": 1.0}
    assert cfg["idempotency_key"] == "stripe" and cfg["idempotency_days"] == 30


@pytest.mark.parametrize("config", [
    {"allowed_origins": ["https://shop.example.com/path"]},
    {"allowed_origins": ["null"]},
    {"allowed_origins": ["file://"]},
    {"redirect_url": "javascript:alert(1)"},
    {"redirect_url": "https://shop.example.com/\r\nSet-Cookie: a=b"},
    {"honeypot_field": "a b"},
    {"idempotency_key": "body:" + "a." * 200},
    {"idempotency_key": "nope"},
    {"handshake": {"type": "meta"}},
    {"handshake": {"type": "slack", "verify_token": "x"}},
    {"rate_per_ip": 0},
])
def test_hostile_values_are_refused(live: Any, config: dict[str, Any]) -> None:
    with live.admin() as c:
        r = c.post("/api/v1/sources", json={"name": "x", "client_id": "acme", "config": config})
    assert r.status_code == 422, (config, r.text)
    assert r.json()["error"]["code"] == "invalid_request"


def test_cli_flags(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"})
    cli_migrate(env)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    p = run("source", "create", "--name", "form", "--client", "acme", "--allow-origin", "https://shop.example.com",
            "--allow-origin", "*", "--redirect-url", "https://shop.example.com/thanks", "--rate-per-ip", "0.5",
            "--burst-per-ip", "5", "--honeypot-field", "website", "--idempotency-key", "stripe",
            "--idempotency-days", "7", "--response-preset", "salesforce-ack", "--json")
    assert p.returncode == 0, p.stderr
    assert "warning" in p.stderr and "'*'" in p.stderr
    cfg = orjson.loads(p.stdout)["config"]
    assert cfg["allowed_origins"] == ["https://shop.example.com", "*"]
    assert (cfg["redirect_url"], cfg["rate_per_ip"], cfg["burst_per_ip"], cfg["honeypot_field"]) == (
        "https://shop.example.com/thanks", 0.5, 5, "website")
    assert (cfg["idempotency_key"], cfg["idempotency_days"], cfg["response"]["preset"]) == ("stripe", 7,
                                                                                           "salesforce-ack")
    p = run("source", "update", "form", "--allow-origin", "none", "--handshake", "meta", "--verify-token", "abc",
            "--honeypot-field", "", "--json")
    assert p.returncode == 0, p.stderr
    cfg = orjson.loads(p.stdout)["config"]
    assert cfg["allowed_origins"] == [] and cfg["honeypot_field"] is None
    assert cfg["handshake"] == {"type": "meta", "verify_token": "abc"} and cfg["rate_per_ip"] == 0.5
    p = run("source", "update", "form", "--redirect-url", "javascript:alert(1)")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "redirect_url" in p.stderr
