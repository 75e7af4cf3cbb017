#!/usr/bin/env python3
"""Mapping editor benchmark: wall time of the console's preview (a draft over the source's last 20
stored requests, in the server's parse pool), against a running ``hookbay serve``.

    HOOKBAY_ADMIN_TOKEN=... .venv/bin/python bench/mapping_preview.py --url http://127.0.0.1:8000 [--requests 200]

Creates a source with a mapping, posts ``--requests`` bodies of ~2 KiB, logs in to the console and
times 20 previews without and 20 with a pasted body (the first includes the parse pool's start).
Record ``uptime`` beside the figures: the machine's load moves them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import httpx

DRAFT = ("version: 1\ntarget: contact\nfields:\n  Email: {expr: customer.email}\n"
         "  SourceName: {constant: Web}\n  SourceType: {constant: Form}\n")
MAPPING = {"version": 1, "target": "contact", "fields": {
    "Email": {"expr": "customer.email"}, "SourceName": {"constant": "Shop"}, "SourceType": {"constant": "Ecommerce"}}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    token = os.environ["HOOKBAY_ADMIN_TOKEN"]
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=args.url, timeout=60) as c:
        src = c.post("/api/v1/sources", headers=auth, json={
            "name": f"bench-mapping-{time.time_ns()}", "client_id": "bench",
            "config": {"parser": "mapping", "mapping": MAPPING}}).json()
        for i in range(args.requests):
            c.post(src["ingest_url"], json={"customer": {"email": f"u{i}@example.com"}, "pad": "x" * 2000})
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text)
        assert csrf
        c.post("/ui/login", data={"csrf": csrf.group(1), "token": token, "next": "/ui/"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/").text)
        assert csrf
        for name, extra in (("preview", {}), ("preview + pasted body", {"body": '{"customer":{"email":"p@x.co"}}'})):
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = c.post(f"/ui/sources/{src['id']}/mapping",
                           data={"csrf": csrf.group(1), "action": "preview", "draft": DRAFT, **extra})
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.status_code
            print(f"{name}: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms ({args.repeat} runs)")


if __name__ == "__main__":
    main()
