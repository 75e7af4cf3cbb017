"""Several relay agents on one source (issue #17): the head of the queue is leased by one agent at
a time and acks are fenced by the lease id, so three agents, with the server killed with SIGKILL
in the middle of a batch, still deliver every message exactly once and in order.

The bound: the lease (the agents' ``--visibility``) must outlast the server's outage. A batch's
holder keeps its acks while the server is down and sends them on its return; if the lease ran out
first, another agent takes the head and delivers the holder's unacked messages again (with 4 s
leases and a restart of a few seconds this test saw messages delivered twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.test_crash import _env, _start
from tests.integration.test_relay_agent import Receiver, _kill9, _relay_source, _send

N = 150


@pytest.mark.slow
def test_three_agents_deliver_each_message_once_in_order_across_a_server_kill(db_url: str, tmp_path: Path) -> None:
    port, rport = free_port(), free_port()
    env = _env(db_url, tmp_path, port)
    server_log = tmp_path / "server.log"
    server = _start(env, port, server_log)
    src, token = _relay_source(port, "edge")
    receiver = Receiver(rport)
    receiver.up()
    agents = []
    for i in range(3):
        agent_env = dict(os.environ, HOOKBAY_RELAY_TOKEN=token, HOOKBAY_AGENT_STATE_DIR=str(tmp_path / f"agent{i}"))
        agents.append(subprocess.Popen(
            [sys.executable, "-m", "hookbay", "agent", "--server", f"http://127.0.0.1:{port}",
             "--forward", f"http://127.0.0.1:{rport}/hook", "--wait", "2", "--visibility", "15",  # longer than the outage below
             "--min-backoff", "0.2", "--max-backoff", "1", "--json"],
            env=agent_env, stdout=(tmp_path / f"agent{i}.log").open("wb"), stderr=subprocess.STDOUT))
    try:
        _send(src["ingest_url"], 0, 100)
        receiver.wait_for(20, 30)
        _kill9(server)  # in the middle of a batch: one agent holds the head's lease
        time.sleep(0.5)
        server = _start(env, port, server_log)
        _send(src["ingest_url"], 100, N)
        receiver.wait_for(N, 60)
        time.sleep(16)  # past the visibility timeout: a late duplicate would show up now
        with receiver.lock:
            got = list(receiver.got)
        dupes = sorted({n for n in got if got.count(n) > 1})
        assert not dupes, f"delivered more than once: {dupes}"
        assert got == list(range(N)), "out of order or missing"
    finally:
        for a in agents:
            a.send_signal(signal.SIGTERM)
        for a in agents:
            try:
                a.wait(timeout=15)
            except subprocess.TimeoutExpired:
                a.kill()
        receiver.down()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
