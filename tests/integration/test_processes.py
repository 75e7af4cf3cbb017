"""`hookbay serve --processes N`: N ingest processes on one port and a worker process, on PostgreSQL.

A dead child is replaced while the others keep answering; SIGTERM under load drains all of them
(every acknowledged request is stored and processed once); SQLite is refused in one line; a killed
supervisor takes its children with it (no orphan keeps the port)."""

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
import sqlalchemy as sa

from tests.conftest import ADMIN_TOKEN, free_port
from tests.deploy import server_env, start_serve, stop

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}



def _started(log: Path) -> dict[int, int]:
    """slot -> pid of the newest ingest process of each slot, from the supervisor's log."""
    slots: dict[int, int] = {}
    for line in log.read_text().splitlines():
        if '"ingest_process_started"' in line:
            rec = orjson.loads(line)
            slots[rec["slot"]] = rec["pid"]
    return slots


def _wait(cond, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _source(base: str) -> str:
    r = httpx.post(f"{base}/api/v1/sources", json={"name": "mp", "client_id": "acme"}, headers=AUTH, timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["ingest_url"])


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _all_processed(url: str, acked: dict[bytes, str], timeout: float = 60) -> None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            deadline = time.monotonic() + timeout
            while conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar():
                conn.rollback()
                assert time.monotonic() < deadline, "jobs still pending"
                time.sleep(0.2)
            rows = {r.id: r for r in conn.execute(sa.text(
                "SELECT id, body, state FROM requests WHERE verdict = 'accepted'"))}
            recs = dict(conn.execute(sa.text("SELECT request_id, count(*) FROM records GROUP BY request_id")).all())
    finally:
        engine.dispose()
    for body, rid in acked.items():
        assert rid in rows, f"acknowledged request {rid} lost"
        assert bytes(rows[rid].body) == body
        assert rows[rid].state == "processed" and recs.get(rid) == 1, (rid, rows[rid].state, recs.get(rid))


def _blast(url: str, acked: dict[bytes, str], stop_ev: threading.Event, clients: int = 16,
           start: int = 0) -> None:
    lock = threading.Lock()
    nxt = [start]

    def run() -> None:
        with httpx.Client(timeout=15) as c:
            while not stop_ev.is_set():
                with lock:
                    n = nxt[0]
                    nxt[0] += 1
                body = orjson.dumps({"n": n, "email": f"user{n}@example.com"})
                try:
                    r = c.post(url, content=body, headers={"Content-Type": "application/json"})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    with lock:
                        acked[body] = r.json()["request_id"]

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_processes_above_one_are_refused_on_sqlite(tmp_path: Path) -> None:
    env = server_env(f"sqlite:///{tmp_path / 'hookbay.db'}", tmp_path, free_port(), HOOKBAY_DATABASE_URL="")
    for args, extra in ((["--processes", "2"], {}), ([], {"HOOKBAY_PROCESSES": "3"})):
        p = subprocess.run([sys.executable, "-m", "hookbay", "serve", *args], env={**env, **extra},
                           capture_output=True, text=True, timeout=60)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1, p.stderr + p.stdout
        assert "needs PostgreSQL" in lines[0] and "one writer" in lines[0] and "HOOKBAY_DATABASE_URL" in lines[0]


def test_children_share_the_port_and_a_dead_one_is_replaced(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = server_env(pg_url, tmp_path, port)
    log = tmp_path / "serve.log"
    proc = start_serve(env, log, "--processes", "2")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: len(_started(log)) == 2, "two ingest processes")
        first = _started(log)
        assert len(set(first.values())) == 2 and proc.pid not in first.values()
        url = _source(base)
        acked: dict[bytes, str] = {}
        for n in range(40):  # new connections each time: the kernel hands them to either process
            body = orjson.dumps({"n": n})
            r = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=10)
            assert r.status_code == 200
            acked[body] = r.json()["request_id"]
        os.kill(first[0], signal.SIGKILL)
        _wait(lambda: _started(log).get(0) not in (None, first[0]), "slot 0 restarted")
        for n in range(40, 80):  # answered throughout: the surviving process accepts meanwhile
            body = orjson.dumps({"n": n})
            r = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=10)
            assert r.status_code == 200, r.text
            acked[body] = r.json()["request_id"]
        assert _started(log)[1] == first[1] and _alive(first[1])
        assert '"ingest_process_died"' in log.read_text()
        _all_processed(pg_url, acked)
        children = list(_started(log).values())
    finally:
        assert stop(proc) == 0
    for pid in children:
        assert not _alive(pid), f"child {pid} outlived the supervisor"


def test_sigterm_under_load_drains_every_process(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = server_env(pg_url, tmp_path, port)
    log = tmp_path / "serve.log"
    proc = start_serve(env, log, "--processes", "2")
    url = _source(f"http://127.0.0.1:{port}")
    acked: dict[bytes, str] = {}
    stop_ev = threading.Event()

    def terminate() -> None:
        _wait(lambda: len(acked) >= 300, "load reached the server", 60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        stop_ev.set()

    t = threading.Thread(target=terminate)
    t.start()
    _blast(url, acked, stop_ev)
    t.join()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert len(acked) >= 300
    for pid in _started(log).values():
        assert not _alive(pid)
    proc = start_serve(env, log, "--processes", "2")  # processing left over is finished by the next start
    try:
        _all_processed(pg_url, acked)
    finally:
        stop(proc)


def test_killed_supervisor_takes_its_children_along(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = server_env(pg_url, tmp_path, port)
    log = tmp_path / "serve.log"
    proc = start_serve(env, log, "--processes", "2")
    _wait(lambda: len(_started(log)) == 2, "two ingest processes")
    children = list(_started(log).values())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    _wait(lambda: not any(_alive(p) for p in children), "children exit once the supervisor is gone", 30)
