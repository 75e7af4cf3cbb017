"""The ``log`` action (added as one module plus one registry line) end to end in a real
``hookbay serve`` on SQLite and PostgreSQL: each record's delivery ends ``succeeded`` and writes one
JSON log line naming the request, the action and the record index, and no personal data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import ADMIN_TOKEN, free_port

ROOT = Path(__file__).resolve().parents[2]
CONTACT = orjson.loads((ROOT / "bench" / "contact.json").read_bytes())


def test_log_action_succeeds_and_logs_one_line_per_record_without_personal_data(db_url: str,
                                                                                  tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKBAY_")} | {
        "PYTHONPATH": str(ROOT), "HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url,
        "HOOKBAY_PORT": str(port), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN, "HOOKBAY_LOG_JSON": "true",
        "HOOKBAY_LOG_LEVEL": "info", "HOOKBAY_WORKER_POLL_SECONDS": "0.2"}
    err = tmp_path / "stderr.log"
    proc = subprocess.Popen([sys.executable, "-m", "hookbay", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=err.open("wb"))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=15)
        src = admin.post("/api/v1/sources", json={"name": "dry run", "client_id": "acme", "config": {
            "parser": "contact", "actions": [{"type": "log", "name": "trace"}]}}).json()
        second = {**CONTACT, "Email": "grace.hopper@example.com", "LastName": "Hopper"}
        r = httpx.post(f"{base}/V1/Data/{src['token']}", json=[CONTACT, second])
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        while True:
            items = admin.get("/api/v1/deliveries", params={"request_id": rid}).json()["items"]
            if len(items) == 2 and all(d["state"] != "pending" and d["state"] != "running" for d in items):
                break
            assert time.monotonic() < deadline + 30, items
            time.sleep(0.1)
        assert sorted((d["action_type"], d["action_name"], d["state"]) for d in items) == [
            ("log", "trace", "succeeded")] * 2
        assert {d["destination"] for d in items} == {"log"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = err.read_text()
    lines = [orjson.loads(ln) for ln in text.splitlines() if ln.strip()]
    logged = [e for e in lines if e["event"] == "action_log"]
    assert sorted(e["record_index"] for e in logged) == [0, 1]
    assert all(e["request_id"] == rid and e["action"] == "trace" and e["source_id"] == src["id"] for e in logged)
    for personal in ("lovelace", "hopper", "2079460958", "7700900123", "james"):
        assert personal not in text.lower()
