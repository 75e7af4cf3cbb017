#!/usr/bin/env python3
"""Slowloris check (issue #11, finding 4): webhooks answered while thousands of slow connections
are held, and when the server closes the held ones.

    .venv/bin/python bench/slowloris.py [--slow 5000] [--webhooks 50]

Starts `hookbay serve` from this checkout (fresh SQLite data dir, default settings, or any
HOOKBAY_* from the environment), opens --slow connections from 127.0.0.2, 127.0.0.3, ... (250
per address, under the per-client cap) that each stall in one way (nothing sent, a partial
request line, partial headers, a short body), then sends --webhooks webhooks one at a time on
new connections and reports their latency, then waits for the server to close every slow one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
from run import _ingest_url_from, free_port, start_server, stop_server, wait_until_answers  # noqa: E402

PER_ADDRESS = 250


def stall(i: int, path: str) -> bytes:
    return [b"", b"POST /v1/da",
            f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode(),
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode()][i % 4]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slow", type=int, default=5000)
    ap.add_argument("--webhooks", type=int, default=50)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = Path(tempfile.mkdtemp(prefix="hookbay-slowloris-"))
    port = free_port()
    env = {**os.environ, "HOOKBAY_DATA_DIR": str(work), "HOOKBAY_PORT": str(port), "PYTHONPATH": str(ROOT),
           "HOOKBAY_ADMIN_TOKEN": "bench-" + secrets.token_hex(8), "HOOKBAY_LOG_LEVEL": "warning"}
    cli = [sys.executable, "-m", "hookbay"]
    subprocess.run([*cli, "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    out = subprocess.run([*cli, "source", "create", "--name", "slow", "--client", "bench", "--json"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    url = _ingest_url_from(out)
    path = "/" + url.split("/", 3)[3]
    proc = start_server([*cli, "serve"], env, work / "serve.log")
    try:
        wait_until_answers(proc, f"http://127.0.0.1:{port}/healthz", 200)
        sel = selectors.DefaultSelector()
        t_open = time.monotonic()
        for i in range(args.slow):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i // PER_ADDRESS}", 0))
            s.connect(("127.0.0.1", port))
            if data := stall(i, path):
                s.sendall(data)
            sel.register(s, selectors.EVENT_READ)
        opened = time.monotonic() - t_open

        lat = []
        body = json.dumps({"email": "a@example.com"}).encode()
        for _ in range(args.webhooks):
            t0 = time.perf_counter()
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200, r.status
            lat.append((time.perf_counter() - t0) * 1000)

        open_socks = args.slow
        answered = 0
        deadline = time.monotonic() + 120
        while open_socks and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    data = s.recv(65536)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                if data:
                    answered += data.startswith(b"HTTP/1.1 408")
                    continue
                sel.unregister(s)
                s.close()  # type: ignore[union-attr]
                open_socks -= 1
        closed_after = time.monotonic() - t_open
        lat.sort()
        print(json.dumps({
            "slow_connections": args.slow, "opened_in_s": round(opened, 2),
            "webhook_ms": {"n": len(lat), "p50": round(statistics.median(lat), 1),
                           "p99": round(lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0], 1),
                           "max": round(lat[-1], 1)},
            "slow_still_open": open_socks, "answered_408": answered,
            "all_closed_after_s": round(closed_after, 1) if not open_socks else None,
        }, indent=2))
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
