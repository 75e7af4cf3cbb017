"""With HOOKBAY_LOG_JSON=true every line a real ``hookbay serve`` writes to stderr is one JSON
object (uvicorn's, Alembic's and our own), Alembic says nothing at info on start, and a rejection
line names its request id."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import ADMIN_TOKEN, free_port


def test_every_stderr_line_is_json_and_rejections_name_the_request(tmp_path: Path) -> None:
    port = free_port()
    env = {"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_PORT": str(port), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
           "HOOKBAY_LOG_JSON": "true", "HOOKBAY_LOG_LEVEL": "info", "PATH": "/usr/bin:/bin"}
    err = tmp_path / "stderr.log"
    proc = subprocess.Popen([sys.executable, "-m", "hookbay", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=err.open("wb"))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        h = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        src = httpx.post(f"{base}/api/v1/sources", headers=h, json={
            "name": "gh", "client_id": "acme", "secret": "a-long-secret", "config": {"signature": {"scheme": "github"}}
        }).json()
        bad = httpx.post(f"{base}/V1/Data/{src['token']}", json={"email": "ann@example.com"})
        assert bad.status_code == 401
        with socket.create_connection(("127.0.0.1", port)) as s:  # uvicorn logs a malformed request
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            s.recv(1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    lines = [ln for ln in err.read_text().splitlines() if ln.strip()]
    assert lines
    events = [orjson.loads(ln) for ln in lines]  # raises on any non-JSON line
    assert all(isinstance(e, dict) and "event" in e and "level" in e for e in events)
    rejected = [e for e in events if e["event"] == "ingest_rejected"]
    assert rejected and rejected[0]["request_id"].startswith("req_") and rejected[0]["source_id"] == src["id"]
    assert not [e for e in events if str(e.get("logger", "")).startswith("alembic")]
    assert "ann@example.com" not in err.read_text()
