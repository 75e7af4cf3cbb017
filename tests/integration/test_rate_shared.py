"""Rate limits on PostgreSQL hold across processes: every process leases tokens from one bucket in
the database, so together they admit at most ``burst + rate × t`` (issue #17). Two limiters with
stores of their own stand for two processes; then two real `serve --processes 2` children."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, free_port
from tests.deploy import server_env, start_serve, stop
from tests.integration.test_processes import _started, _wait

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _two_processes(settings: Any) -> Any:
    from hookbay.ingest.ratelimit import SharedRateLimiter
    from hookbay.store import open_store

    return [(s, SharedRateLimiter(s.lease_rate_tokens)) for s in (open_store(settings), open_store(settings))]


def test_two_processes_share_one_bucket(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    """A bucket that refills once in ~17 minutes: whoever asks, exactly ``burst`` requests pass in
    total, however the processes interleave; a third process started later finds it empty."""
    if not db_url.startswith("postgresql"):
        pytest.skip("one process on SQLite: its in-memory bucket is the whole limit")
    live = live_server_factory(db_url, run_worker=False)

    async def run() -> tuple[list[float], float]:
        procs = _two_processes(live.settings)
        for s, _ in procs:
            await s.start()
        try:
            waits = []
            for i in range(30):
                _, lim = procs[i % 3 % 2]
                waits.append(await lim.check("src_shared", 0.001, 10))
            late_store, late = _two_processes(live.settings)[0]
            await late_store.start()
            try:
                late_wait = await late.check("src_shared", 0.001, 10)
            finally:
                await late_store.close()
            return waits, late_wait
        finally:
            for s, _ in procs:
                await s.close()

    waits, late_wait = asyncio.run(run())
    assert sum(1 for w in waits if w == 0) == 10, waits
    assert all(w > 100 for w in waits if w), waits  # the next token is ~1,000 s away
    assert late_wait > 100


def test_database_failure_falls_back_to_the_process_bucket() -> None:
    from hookbay.ingest.ratelimit import SharedRateLimiter

    async def broken(*_: Any) -> Any:
        raise ConnectionError("database gone")

    async def run() -> list[float]:
        lim = SharedRateLimiter(broken)
        return [await lim.check("s", 0.001, 3) for _ in range(5)]

    waits = asyncio.run(run())
    assert waits[:3] == [0.0, 0.0, 0.0] and all(w > 0 for w in waits[3:])


def test_serve_processes_two_admit_one_rate_together(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """New connections for every request: the kernel spreads them over both processes. Per
    process buckets admitted up to twice the limit; the shared one holds it for the pair."""
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start_serve(server_env(pg_url, tmp_path, port), log, "--processes", "2")
    base = f"http://127.0.0.1:{port}"
    rate, burst = 2.0, 2.0
    try:
        _wait(lambda: len(_started(log)) == 2, "two ingest processes")
        r = httpx.post(f"{base}/api/v1/sources", headers=AUTH, timeout=10,
                       json={"name": "limited", "client_id": "acme", "config": {"rate": rate, "burst": burst}})
        assert r.status_code == 201, r.text
        url = r.json()["ingest_url"]
        codes: list[int] = []
        retry_after: set[str] = set()
        lock = threading.Lock()
        stop_at = time.monotonic() + 5.0

        def send() -> None:
            while time.monotonic() < stop_at:
                try:
                    resp = httpx.post(url, json={"n": 1}, timeout=10)  # a new connection each time
                except httpx.HTTPError:
                    continue
                with lock:
                    codes.append(resp.status_code)
                    if resp.status_code == 429:
                        retry_after.add(resp.headers.get("retry-after", ""))

        started = time.monotonic()
        threads = [threading.Thread(target=send) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    finally:
        assert stop(proc) == 0
    ok = codes.count(200)
    assert set(codes) <= {200, 429}, set(codes)
    assert codes.count(429) >= 5  # the limit was reached, over and over
    assert "" not in retry_after
    # The shared bucket admits at most burst + rate × t; a per-process bucket each would have
    # allowed up to twice that. One token of slack for a lease's clock being read a moment late.
    assert ok <= burst + rate * elapsed + 1, (ok, elapsed)
    assert ok >= rate * elapsed * 0.5, (ok, elapsed)  # and it does admit at about the rate
