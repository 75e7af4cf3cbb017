"""End to end: `hookbay serve` + `hookbay agent` + a local receiver on loopback. The receiver fails,
then goes away, the server is killed with SIGKILL twice (once while the agent drains a backlog),
and still every request reaches the receiver exactly once, in order."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, free_port
from tests.integration.test_crash import _env, _start

N = 200


class Receiver:
    """A local application: records every request it answers 2xx, in arrival order. ``mode``:
    "up" answers 200, "failing" answers 503 (records nothing), and ``down()`` closes the socket."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[int] = []
        self.message_ids: list[int] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.mode = "up"
        self._srv: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(0.005)  # a real application takes a moment: lets the test kill the server mid-drain
                if rec.mode != "up":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with rec.lock:
                    rec.got.append(orjson.loads(body)["n"])
                    rec.message_ids.append(int(self.headers["X-Hookbay-Message-Id"]))
                    rec.headers.append({k.lower(): v for k, v in self.headers.items()} | {"_path": self.path})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.mode = "up"
        self._srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    def count(self) -> int:
        with self.lock:
            return len(self.got)

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            assert time.monotonic() < deadline, f"receiver got {self.count()} of {n}"
            time.sleep(0.02)


def _send(url: str, start: int, stop: int) -> None:
    """Send requests in order; retry each (same Idempotency-Key) until it is acknowledged."""
    with httpx.Client(timeout=10) as c:
        for n in range(start, stop):
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = c.post(url, content=orjson.dumps({"n": n}),
                               headers={"Content-Type": "application/json", "Idempotency-Key": f"n-{n}",
                                        "X-Seq": str(n)})
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"request {n} never acknowledged"
                time.sleep(0.1)


def _relay_source(port: int, name: str) -> tuple[dict, str]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        src = c.post("/api/v1/sources", json={"name": name, "client_id": "acme", "config": {"relay": True}}).json()
        tok = c.post(f"/api/v1/sources/{src['id']}/relay-tokens", json={"name": "edge-agent"}).json()
    return src, tok["token"]


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
def test_agent_delivers_every_message_once_in_order_across_crashes(db_url: str, tmp_path: Path) -> None:
    port, rport = free_port(), free_port()
    env = _env(db_url, tmp_path, port)
    server_log = tmp_path / "server.log"
    server = _start(env, port, server_log)
    src, token = _relay_source(port, "edge")
    url = src["ingest_url"]
    receiver = Receiver(rport)
    receiver.up()
    agent_log = tmp_path / "agent.log"
    agent_env = dict(os.environ, HOOKBAY_RELAY_TOKEN=token, HOOKBAY_AGENT_STATE_DIR=str(tmp_path / "agent"))
    agent = subprocess.Popen(
        [sys.executable, "-m", "hookbay", "agent", "--server", f"http://127.0.0.1:{port}",
         "--forward", f"http://127.0.0.1:{rport}/hook?from=relay", "--wait", "2", "--visibility", "4",
         "--min-backoff", "0.2", "--max-backoff", "1", "--json"],
        env=agent_env, stdout=agent_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _send(url, 0, 60)
        receiver.wait_for(60, 15)

        receiver.mode = "failing"  # the application answers 503
        _send(url, 60, 90)
        time.sleep(1.0)
        receiver.down()  # and then it is gone
        _send(url, 90, 120)
        time.sleep(0.5)
        _kill9(server)  # the server dies while the agent keeps failing
        time.sleep(0.5)
        server = _start(env, port, server_log)
        assert receiver.count() == 60

        receiver.up()  # back: the agent drains the backlog of 60 ...
        receiver.wait_for(75, 20)
        _kill9(server)  # ... and the server dies again in the middle of it
        server = _start(env, port, server_log)
        _send(url, 120, N)
        receiver.wait_for(N, 30)
        time.sleep(1.5)  # a late duplicate would show up now

        with receiver.lock:
            got, mids = list(receiver.got), list(receiver.message_ids)
        dupes = sorted({n for n in got if got.count(n) > 1})
        assert not dupes, f"delivered more than once: {dupes}"
        assert got == list(range(N)), "out of order or missing"
        assert mids == sorted(mids)
        h = receiver.headers[7]
        assert h["x-seq"] == "7" and h["content-type"] == "application/json" and h["_path"] == "/hook?from=relay"
        assert h["x-hookbay-request-id"].startswith("req_") and "idempotency-key" in h

        status = httpx.get(f"http://127.0.0.1:{port}/api/v1/sources/{src['id']}/relay",
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        assert status["depth"] == 0, status
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            code = agent.wait(timeout=15)
        finally:
            if agent.poll() is None:
                agent.kill()
            receiver.down()
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
    assert code == 0
    events = [orjson.loads(line) for line in agent_log.read_text().splitlines() if line.startswith("{")]
    kinds = {e["event"] for e in events}
    assert {"started", "forwarded", "forward_failed", "server_unreachable", "reconnected", "stopped"} <= kinds
    assert events[-1]["event"] == "stopped" and events[-1]["forwarded"] == N and events[-1]["ack_lost"] == 0


def test_agent_once_drains_and_exits(db_url: str, tmp_path: Path) -> None:
    port, rport = free_port(), free_port()
    env = _env(db_url, tmp_path, port) | {"HOOKBAY_AGENT_STATE_DIR": str(tmp_path / "agent")}
    src = orjson.loads(subprocess.run([sys.executable, "-m", "hookbay", "source", "create", "--name", "o", "--client",
                                       "acme", "--relay", "--json"], env=env, capture_output=True, check=True).stdout)
    assert src["config"]["relay"] is True
    server = _start(env, port, tmp_path / "server.log")
    token = orjson.loads(subprocess.run(
        [sys.executable, "-m", "hookbay", "source", "relay-token", "create", src["name"], "--json"],
        env=env, capture_output=True, check=True).stdout)["token"]
    receiver = Receiver(rport)
    try:
        _send(src["ingest_url"], 0, 5)
        args = [sys.executable, "-m", "hookbay", "agent", "--server", f"http://127.0.0.1:{port}", "--token", token,
                "--forward", f"http://127.0.0.1:{rport}/in", "--once", "--json"]
        # the application is down: --once exits 1 and the message stays queued, first in line
        failed = subprocess.run(args, env=env, capture_output=True, timeout=60)
        assert failed.returncode == 1, failed.stdout
        st = orjson.loads(subprocess.run([sys.executable, "-m", "hookbay", "source", "relay-status", src["id"],
                                          "--json"], env=env, capture_output=True, check=True).stdout)
        assert st["depth"] == 5 and st["leased"] == 0 and st["head"]["deliveries"] == 1
        assert "ConnectError" in st["head"]["last_error"]
        receiver.up()
        done = subprocess.run(args, env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout
        last = orjson.loads(done.stdout.splitlines()[-1])
        assert last["event"] == "stopped" and last["forwarded"] == 5
        assert receiver.got == [0, 1, 2, 3, 4]
        # nothing left: the next run forwards nothing and exits 0
        again = subprocess.run(args, env=env, capture_output=True, timeout=60)
        assert again.returncode == 0 and orjson.loads(again.stdout.splitlines()[-1])["forwarded"] == 0
        # a revoked token: exit 3
        toks = httpx.get(f"http://127.0.0.1:{port}/api/v1/sources/{src['id']}/relay-tokens",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        subprocess.run([sys.executable, "-m", "hookbay", "source", "relay-token", "revoke", src["id"], toks[0]["id"]],
                       env=env, capture_output=True, check=True)
        assert subprocess.run(args, env=env, capture_output=True, timeout=60).returncode == 3
    finally:
        receiver.down()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)


class RecordingReceiver:
    """A local application that records every request it takes (message id, arrival time, whether
    it was marked as a possible duplicate). ``hold_at``: the request that arrives when that many
    were taken is held until :attr:`release` is set and only then recorded: the application has
    taken it, but its answer cannot reach an agent killed meanwhile."""

    def __init__(self, port: int, hold_at: int) -> None:
        self.port = port
        self.hold_at = hold_at
        self.arrivals: list[tuple[float, int, bool]] = []
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.release = threading.Event()
        self.held_id: int | None = None
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mid = int(self.headers["X-Hookbay-Message-Id"])
                with rec.lock:
                    hold = rec.held_id is None and len(rec.arrivals) == rec.hold_at
                    if hold:
                        rec.held_id = mid
                if hold:
                    rec.held.set()
                    rec.release.wait(60)
                time.sleep(0.002)
                with rec.lock:
                    rec.arrivals.append((time.monotonic(), mid, self.headers.get("X-Hookbay-Possible-Duplicate") == "1"))
                with contextlib.suppress(OSError):  # the agent may be dead by now
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def first_after(self, t: float, timeout: float) -> float:
        """Seconds from ``t`` to the first arrival after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                later = [a[0] for a in self.arrivals if a[0] > t]
            if later:
                return later[0] - t
            time.sleep(0.02)
        return float("inf")

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()


@pytest.mark.slow
def test_agent_killed_9_replays_acks_and_resumes_at_once(db_url: str, tmp_path: Path) -> None:
    """kill -9 of the agent, 4 times over 300 messages: acks it owed are replayed from its journal (no
    second delivery), its held lease is taken back at once (not after the 60 s visibility), and the
    one message in doubt (taken by the application, the agent killed before it heard the answer)
    is delivered again marked ``X-Hookbay-Possible-Duplicate: 1``: nothing else is ever repeated."""
    n_msgs, kill_at = 300, (110, 170, 230)
    port, rport = free_port(), free_port()
    env = _env(db_url, tmp_path, port)
    server = _start(env, port, tmp_path / "server.log")
    src, token = _relay_source(port, "edge")
    _send(src["ingest_url"], 0, n_msgs)
    receiver = RecordingReceiver(rport, hold_at=40)
    state_dir = tmp_path / "agent-state"
    agent_env = dict(os.environ, HOOKBAY_RELAY_TOKEN=token, HOOKBAY_AGENT_STATE_DIR=str(state_dir))
    log = (tmp_path / "agent.log").open("ab")

    def start_agent() -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # the default --visibility (60 s): what a killed agent's lease lasts
            [sys.executable, "-m", "hookbay", "agent", "--server", f"http://127.0.0.1:{port}",
             "--forward", f"http://127.0.0.1:{rport}/hook", "--wait", "2", "--min-backoff", "0.2",
             "--max-backoff", "1", "--json"], env=agent_env, stdout=log, stderr=subprocess.STDOUT)

    agent = start_agent()
    resumes: list[float] = []
    try:
        # 1: killed while the application holds a message it will take (the window in doubt)
        assert receiver.held.wait(60), "the agent forwarded nothing"
        _kill9(agent)
        receiver.release.set()
        time.sleep(0.2)  # recorded by the application; its answer went nowhere
        restarted = time.monotonic()
        agent = start_agent()
        resumes.append(receiver.first_after(restarted, 30))
        # 2-4: killed right after arrivals mid-stream (acks in flight or not yet sent)
        for at in kill_at:
            deadline = time.monotonic() + 60
            while receiver.count() < at:
                assert time.monotonic() < deadline, f"stuck at {receiver.count()}"
                time.sleep(0.001)
            _kill9(agent)
            restarted = time.monotonic()
            agent = start_agent()
            resumes.append(receiver.first_after(restarted, 30))
        deadline = time.monotonic() + 60
        while len({a[1] for a in receiver.arrivals}) < n_msgs:
            assert time.monotonic() < deadline, f"only {len({a[1] for a in receiver.arrivals})} of {n_msgs}"
            time.sleep(0.05)
        time.sleep(2.0)  # a late duplicate would show up now
        status = httpx.get(f"http://127.0.0.1:{port}/api/v1/sources/{src['id']}/relay",
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        assert status["depth"] == 0, status
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=15)
        finally:
            if agent.poll() is None:
                agent.kill()
            receiver.release.set()
            receiver.stop()
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)

    with receiver.lock:
        arrivals = list(receiver.arrivals)
    mids = [a[1] for a in arrivals]
    assert len(set(mids)) == n_msgs, "a message never arrived"
    assert mids == sorted(mids), "out of order"
    first: set[int] = set()
    repeats: list[tuple[int, bool]] = []
    for _, mid, marked in arrivals:
        if mid in first:
            repeats.append((mid, marked))
        first.add(mid)
    assert (receiver.held_id, True) in repeats, f"the message in doubt was not redelivered marked: {repeats}"
    assert all(marked for _, marked in repeats), f"a repeat not marked as possible duplicate: {repeats}"
    assert len(repeats) <= 1 + len(kill_at), repeats  # at most the one message in doubt per crash
    assert max(resumes) < 10, f"seconds from restart to the next delivery: {resumes}"
    journals = list(state_dir.glob("journal-*.log"))
    assert len(journals) == 1 and journals[0].stat().st_size < 4096  # compacted on clean stop


def test_agent_honours_the_applications_retry_after(live) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 row 12: when the local application answers 503 with ``Retry-After: 30``, the agent
    gives the message back for (at least) those 30 seconds, not its own sub-second back-off: the
    server then holds the queue's head until then."""
    import asyncio
    from datetime import datetime

    from hookbay.relay.agent import Agent, AgentConfig
    from tests.fakes.receiver import Receiver as App

    app = App(default_status=503, extra_headers={"Retry-After": "30"}).start()
    switch = sys.getswitchinterval()
    try:
        src = live.create_source(config={"relay": True})
        with live.admin() as c:
            token = c.post(f"/api/v1/sources/{src['id']}/relay-tokens", json={"name": "edge"}).json()["token"]
        assert live.client.post(f"/V1/Data/{src['token']}", json={"n": 0}).status_code == 200
        events: list[dict] = []
        cfg = AgentConfig(server=live.url, token=token, forward=app.url + "/in", wait=1, min_backoff=0.05,
                          max_backoff=120)
        agent = Agent(cfg, events.append)

        def emit(e: dict) -> None:
            events.append(e)
            if e["event"] == "forward_failed":
                agent.stop()

        agent.emit = emit
        before = time.time()
        assert asyncio.run(asyncio.wait_for(agent.run(), 30)) == 0
        [failed] = [e for e in events if e["event"] == "forward_failed"]
        assert failed["status"] == 503 and failed["retry_in_s"] >= 30
        with live.admin() as c:
            head = c.get(f"/api/v1/sources/{src['id']}/relay").json()["head"]
        assert head["deliveries"] == 1 and "503" in head["last_error"]
        assert datetime.fromisoformat(head["available_at"]).timestamp() >= before + 29
        assert len(app.received) == 1
    finally:
        sys.setswitchinterval(switch)
        app.stop()
