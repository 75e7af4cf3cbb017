"""CLI commands that crashed or did the wrong thing, run as a user runs them: a subprocess against the
database of a live server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, cli_migrate

ROOT = Path(__file__).resolve().parents[2]
CONTACT = orjson.loads((ROOT / "bench" / "contact.json").read_bytes())


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
              "HOOKBAY_LOG_LEVEL": "warning"})
    return cli_migrate(e)


def hb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr + p.stdout
    return p


def test_profiles_export_matches_the_api(live, env) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact", "format": "json"})
    r = live.client.post(f"/V1/Data/{src['token']}", json=CONTACT, params={"wait": 1})
    pid = r.json()["receipt"]["records"][0]["profile_id"]
    with live.admin() as c:
        api = c.get(f"/api/v1/profiles/{pid}/export").json()
    out = hb(env, "profiles", "export", pid)
    assert orjson.loads(out.stdout) == api
    assert api["profile"]["id"] == pid and api["records"]


def test_replay_leaves_a_woocommerce_ping_a_ping(live, env) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"signature": {"scheme": "woocommerce"}}, secret="wc-secret-1234")
    r = live.client.post(f"/V1/Data/{src['token']}", content=b"webhook_id=17",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    rid = r.json()["request_id"]
    assert live.wait_state(rid, ("ping",))["state"] == "ping"

    out = orjson.loads(hb(env, "replay", rid, "--json").stdout)
    assert out["items"][0]["request_id"] == rid and "skipped" in out["items"][0]
    hb(env, "replay", "--source", src["id"])
    with live.admin() as c:
        replayed = c.post("/api/v1/replay", json={"request_id": rid}).json()
        assert "skipped" in replayed["items"][0]
        got = c.get(f"/api/v1/requests/{rid}").json()
    assert got["state"] == "ping" and got["records"] == []
