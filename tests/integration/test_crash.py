"""Crash safety: kill -9 under load, restart, and every acknowledged request is there, processed once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from tests.conftest import ADMIN_TOKEN, cli_migrate, free_port

CLIENTS = 32


def _env(db_url: str, data_dir: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HOOKBAY_DATA_DIR": str(data_dir), "HOOKBAY_PORT": str(port), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "HOOKBAY_JOB_LEASE_SECONDS": "2", "HOOKBAY_LOG_LEVEL": "warning", "HOOKBAY_WORKER_POLL_SECONDS": "0.2",
        "HOOKBAY_DATABASE_URL": db_url,
    })
    return cli_migrate(env)


def _start(env: dict[str, str], port: int, log: Path, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "hookbay", "serve", *args], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def _blast(url: str, start: int, count: int, acked: dict[bytes, str], stop: threading.Event) -> int:
    """Send ``count`` distinct bodies from CLIENTS threads; record the ones answered 2xx."""
    lock = threading.Lock()
    nxt = [start]
    sent = [0]

    def run() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                with lock:
                    if nxt[0] >= start + count:
                        return
                    n = nxt[0]
                    nxt[0] += 1
                body = orjson.dumps({"n": n, "email": f"user{n}@example.com", "pad": "x" * (n % 50)})
                try:
                    r = c.post(url, content=body, headers={"Content-Type": "application/json"})
                except httpx.HTTPError:
                    continue
                finally:
                    with lock:
                        sent[0] += 1
                if 200 <= r.status_code < 300:
                    with lock:
                        acked[body] = r.json()["request_id"]

    threads = [threading.Thread(target=run) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent[0]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_kill_9_loses_no_acknowledged_request(db_url: str, tmp_path: Path, processes: int) -> None:
    """With ``--processes 2`` (PostgreSQL) every process of the server, supervisor, both ingest
    processes and the worker, is killed at once."""
    if processes > 1 and not db_url.startswith("postgresql"):
        pytest.skip("--processes above 1 is refused on SQLite")
    args = ("--processes", str(processes)) if processes > 1 else ()
    port = free_port()
    env = _env(db_url, tmp_path, port)
    out = subprocess.run([sys.executable, "-m", "hookbay", "source", "create", "--name", "crash", "--client",
                          "acme", "--json"], env=env, capture_output=True, check=True)
    url = orjson.loads(out.stdout)["ingest_url"]
    log = tmp_path / "server.log"
    proc = _start(env, port, log, *args)
    acked: dict[bytes, str] = {}
    stop = threading.Event()

    def killer() -> None:
        while len(acked) < 700 and proc.poll() is None:
            time.sleep(0.005)
        if processes > 1:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
        stop.set()

    k = threading.Thread(target=killer)
    k.start()
    sent1 = _blast(url, 0, 1500, acked, stop)
    k.join()
    proc.wait(timeout=10)
    acked_before_kill = len(acked)
    assert 700 <= acked_before_kill < sent1 + 1

    proc = _start(env, port, log, *args)
    try:
        sent2 = _blast(url, 100_000, 1500, acked, threading.Event())
        assert sent1 + sent2 >= 2000
        engine = sa.create_engine(env["HOOKBAY_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
                                  if db_url.startswith("postgresql") else db_url)
        deadline = time.monotonic() + 90
        with engine.connect() as conn:
            while True:
                pending = conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar()
                if pending == 0:
                    break
                assert time.monotonic() < deadline, f"{pending} jobs still pending"
                time.sleep(0.5)
            rows = {r.id: r for r in conn.execute(sa.text(
                "SELECT id, body, state, verdict FROM requests WHERE verdict = 'accepted'"))}
            rec_counts = dict(conn.execute(sa.text(
                "SELECT request_id, count(*) FROM records GROUP BY request_id")).all())
        engine.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

    assert len(acked) >= acked_before_kill + 1400
    for body, rid in acked.items():
        assert rid in rows, f"acknowledged request {rid} lost"
        assert bytes(rows[rid].body) == body
    for rid, row in rows.items():
        assert row.state == "processed", (rid, row.state)
        assert rec_counts.get(rid) == 1, (rid, rec_counts.get(rid))
    assert set(rec_counts) <= set(rows)


@pytest.mark.slow
def test_after_kill_9_jobs_of_the_dead_worker_are_taken_within_seconds(db_url: str, tmp_path: Path) -> None:
    """With the default 30 s lease: a killed worker's heartbeat stops, so a restarted ``serve``
    takes its running jobs after ``HOOKBAY_WORKER_STALE_SECONDS`` (5 s), not after the lease."""
    port = free_port()
    env = _env(db_url, tmp_path, port)
    env.pop("HOOKBAY_JOB_LEASE_SECONDS")
    out = subprocess.run([sys.executable, "-m", "hookbay", "source", "create", "--name", "crash", "--client",
                          "acme", "--json"], env=env, capture_output=True, check=True)
    url = orjson.loads(out.stdout)["ingest_url"]
    log = tmp_path / "server.log"
    proc = _start(env, port, log)
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    acked: dict[bytes, str] = {}
    stop = threading.Event()
    held = [0]

    def killer() -> None:
        deadline = time.monotonic() + 60
        with engine.connect() as conn:
            while proc.poll() is None and time.monotonic() < deadline:
                if len(acked) >= 300:
                    held[0] = conn.execute(sa.text("SELECT count(*) FROM jobs WHERE state = 'running'")).scalar() or 0
                    if held[0]:
                        break
                conn.rollback()
                time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        stop.set()

    k = threading.Thread(target=killer)
    k.start()
    _blast(url, 0, 20_000, acked, stop)
    k.join()
    proc.wait(timeout=10)
    assert held[0] > 0, "the worker held jobs when it was killed"
    proc = _start(env, port, log)
    restarted = time.monotonic()
    try:
        with engine.connect() as conn:
            while conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar():
                conn.rollback()
                assert time.monotonic() - restarted < 10, "acknowledged requests still unprocessed 10 s after restart"
                time.sleep(0.1)
            took = time.monotonic() - restarted
            states = dict(conn.execute(sa.text("SELECT state, count(*) FROM requests GROUP BY state")).all())
    finally:
        engine.dispose()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert set(states) == {"processed"}, states
    print(f"recovered {len(acked)} acknowledged requests in {took:.2f} s after restart")


def test_worker_stops_cleanly_on_sigterm(db_url: str, tmp_path: Path) -> None:
    """``hookbay worker`` under systemd or Kubernetes is stopped with SIGTERM: it must exit 0 and
    retire (hand its jobs back, drop its heartbeat row), not die and leave them to the stale timer."""
    port = free_port()
    env = _env(db_url, tmp_path, port)
    subprocess.run([sys.executable, "-m", "hookbay", "migrate"], env=env, capture_output=True, check=True)
    log = tmp_path / "worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "hookbay", "worker"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        deadline = time.monotonic() + 30
        with engine.connect() as conn:
            while not conn.execute(sa.text("SELECT count(*) FROM workers")).scalar():
                conn.rollback()
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM workers")).scalar() == 0
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
