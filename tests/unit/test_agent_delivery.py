"""The relay agent's delivery loop in process, against a small model of the server's relay queue
(issue #19: the end-to-end agent tests run it as a subprocess, which the mutation run cannot see).

The model keeps the server's rules: messages leave in id order, a lease hands out at most ``max``
of them, an ack names the lease, a nack gives the message back (with the rest of the batch) and
records its delay. The local application is an ``httpx.MockTransport``. What is checked is what
the sender and the application see: what was forwarded, in which order, what was acked or nacked
with which delay, and the exit code."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookbay.relay import agent as agent_module
from hookbay.relay.agent import (
    EXIT_FORWARD_FAILED,
    EXIT_OK,
    EXIT_SERVER_UNREACHABLE,
    EXIT_TOKEN_REJECTED,
    Agent,
    AgentConfig,
)
from hookbay.relay.journal import Journal

FORWARD = "http://app.local/hook?fixed=1"
CALL_BUDGET = 200


def _message(mid: int) -> dict[str, Any]:
    return {"id": mid, "request_id": f"req_{mid}", "method": "POST" if mid % 2 else "PUT",
            "query": f"n={mid}" if mid % 3 else "", "body_b64": base64.b64encode(f'{{"n":{mid}}}'.encode()).decode(),
            "headers": [["Content-Type", "application/json"], ["X-Seq", str(mid)], ["Connection", "close"]]}


class RelayModel:
    """The server side: the queue, leases, acks and nacks, and every call in order."""

    def __init__(self, n: int, ack_state: Callable[[int], str] = lambda mid: "acked") -> None:
        self.queue = [_message(i) for i in range(1, n + 1)]
        self.acked: list[int] = []
        self.taken: list[int] = []
        self.lease_ids: list[str] = []  # of every pull, answered or not
        self.nacks: list[tuple[int, float, str]] = []
        self.pulls: list[dict[str, str]] = []
        self.calls: list[str] = []
        self.leased: dict[int, str] = {}
        self.ack_state = ack_state
        self.fail_next: list[int] = []  # status codes answered (then forgotten) before the real answer
        self.agent: Agent | None = None
        self.stop_when_empty = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        if len(self.calls) > CALL_BUDGET:  # an agent that never stops fails instead of hanging
            raise AssertionError(f"more than {CALL_BUDGET} server calls: {self.calls[-5:]}")
        if request.method == "GET":
            self.lease_ids.append(request.url.params["lease_id"])
        if self.fail_next:
            self.calls.append(f"fail {request.url.path}")
            return httpx.Response(self.fail_next.pop(0), json={"error": "down"})
        path = request.url.path
        if request.method == "GET" and path == "/api/v1/relay/messages":
            p = dict(request.url.params)
            self.pulls.append(p)
            self.calls.append("pull")
            lease = p["lease_id"]
            out = [m for m in self.queue if m["id"] not in self.acked + self.taken][: int(p["max"])]
            for m in out:
                self.leased[m["id"]] = lease
            if not out and self.stop_when_empty and self.agent is not None:
                self.agent.stop()
            return httpx.Response(200, json={"messages": [{**m, "lease_id": lease} for m in out]})
        if request.method == "POST" and path == "/api/v1/relay/messages/ack":
            results = []
            for a in json.loads(request.content)["messages"]:
                self.calls.append(f"ack {a['id']}")
                assert self.leased.get(a["id"]) == a["lease_id"]
                state = self.ack_state(a["id"])
                if state == "acked":
                    self.acked.append(a["id"])
                else:  # another agent holds it now: this one never sees it again
                    self.taken.append(a["id"])
                results.append({"id": a["id"], "state": state})
            return httpx.Response(200, json={"results": results})
        if request.method == "POST" and path.endswith("/nack"):
            mid = int(path.split("/")[-2])
            body = json.loads(request.content)
            assert self.leased.get(mid) == body["lease_id"]
            self.calls.append(f"nack {mid}")
            self.nacks.append((mid, body["delay_s"], body["error"]))
            return httpx.Response(200, json={"state": "delayed"})
        return httpx.Response(404)


class App:
    """The local application: answers from a script per message id (default 200)."""

    def __init__(self, script: dict[int, list[httpx.Response | Exception]] | None = None) -> None:
        self.script = script or {}
        self.seen: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if len(self.seen) > CALL_BUDGET:
            raise AssertionError(f"more than {CALL_BUDGET} forwards")
        request.read()
        self.seen.append(request)
        answers = self.script.get(int(request.headers["x-hookbay-message-id"]))
        if answers:
            a = answers.pop(0)
            if isinstance(a, Exception):
                raise a
            return a
        return httpx.Response(200)

    def ids(self) -> list[int]:
        return [int(r.headers["x-hookbay-message-id"]) for r in self.seen]


class _Asyncio:
    """The agent's ``asyncio`` with a sleep that only records how long it was asked to wait."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Back-off draws the top of its range (the delays are exact) and is not waited out."""
    monkeypatch.setattr(random, "uniform", lambda a, b: b)
    fake = _Asyncio()
    monkeypatch.setattr(agent_module, "asyncio", fake)
    return fake.slept


def _agent(relay: RelayModel, app: App, events: list[dict[str, Any]], **cfg: Any) -> Agent:
    agent = Agent(AgentConfig(server="http://hub.local/", token="rly_t", forward=FORWARD, **cfg), events.append)
    agent.server = httpx.AsyncClient(base_url="http://hub.local", transport=httpx.MockTransport(relay.handler))
    agent.local = httpx.Client(transport=httpx.MockTransport(app.handler), follow_redirects=False)
    relay.agent = agent
    return agent


def test_once_forwards_every_message_in_order_exactly_as_sent_and_acks_each_before_the_next_pull() -> None:
    relay, app, events = RelayModel(5), App(), []
    code = asyncio.run(_agent(relay, app, events, once=True, batch=2).run())
    assert code == EXIT_OK
    assert app.ids() == [1, 2, 3, 4, 5]
    assert relay.acked == [1, 2, 3, 4, 5]
    # every ack of a batch lands before the next pull
    assert relay.calls == ["pull", "ack 1", "ack 2", "pull", "ack 3", "ack 4", "pull", "ack 5", "pull"]
    assert [p["wait"] for p in relay.pulls] == ["0"] * 4 and {p["max"] for p in relay.pulls} == {"2"}
    r = app.seen[0]
    assert (r.method, str(r.url), r.content) == ("POST", FORWARD + "&n=1", b'{"n":1}')
    assert r.headers["x-seq"] == "1" and r.headers["x-hookbay-request-id"] == "req_1"
    assert "x-hookbay-possible-duplicate" not in r.headers
    assert (app.seen[1].method, str(app.seen[1].url)) == ("PUT", FORWARD + "&n=2")
    assert (app.seen[2].method, str(app.seen[2].url)) == ("POST", FORWARD)  # no query of its own
    assert [e["message_id"] for e in events if e["event"] == "forwarded"] == [1, 2, 3, 4, 5]
    stopped = events[-1]
    assert stopped["event"] == "stopped" and stopped["forwarded"] == 5 and stopped["failed"] == 0
    assert stopped["exit_code"] == EXIT_OK


def test_a_failed_forward_acks_what_went_before_nacks_with_back_off_and_keeps_the_order() -> None:
    relay = RelayModel(4)
    app = App({2: [httpx.Response(500, text="boom"), httpx.ConnectError("refused"), httpx.Response(502)]})
    relay.stop_when_empty = True
    events: list[dict[str, Any]] = []
    code = asyncio.run(_agent(relay, app, events, batch=10, min_backoff=1.0, max_backoff=3.0).run())
    assert code == EXIT_OK
    assert app.ids() == [1, 2, 2, 2, 2, 3, 4]
    assert relay.acked == [1, 2, 3, 4]
    # back-off doubles per failure in a row and stops at the cap; the ack of 1 goes before the nack
    assert [(m, d) for m, d, _ in relay.nacks] == [(2, 1.0), (2, 2.0), (2, 3.0)]
    assert relay.calls[:3] == ["pull", "ack 1", "nack 2"]
    assert relay.nacks[0][2] == "HTTP 500: boom" and relay.nacks[1][2].startswith("ConnectError")
    failed = [e for e in events if e["event"] == "forward_failed"]
    assert [(e["status"], e["retry_in_s"], e["returned"]) for e in failed] == [
        (500, 1.0, 3), (None, 2.0, 3), (502, 3.0, 3)]
    assert events[-1]["forwarded"] == 4 and events[-1]["failed"] == 3


@pytest.mark.parametrize(("retry_after", "want"), [("7", 7.0), ("600", 60.0), ("0", 1.0), ("soon", 1.0)])
def test_the_applications_retry_after_lengthens_the_delay_up_to_the_cap(retry_after: str, want: float) -> None:
    relay, events = RelayModel(1), []
    relay.stop_when_empty = True
    app = App({1: [httpx.Response(503, headers={"Retry-After": retry_after})]})
    asyncio.run(_agent(relay, app, events, min_backoff=1.0, max_backoff=60.0).run())
    assert [d for _, d, _ in relay.nacks] == [want]
    assert relay.acked == [1] and app.ids() == [1, 1]


def test_once_a_failed_forward_gives_the_message_back_at_once_and_exits_1() -> None:
    relay, events = RelayModel(3), []
    app = App({2: [httpx.Response(503, headers={"Retry-After": "30"})]})
    code = asyncio.run(_agent(relay, app, events, once=True).run())
    assert code == EXIT_FORWARD_FAILED
    assert app.ids() == [1, 2] and relay.acked == [1]
    assert [(m, d) for m, d, _ in relay.nacks] == [(2, 0.0)]


def test_a_refused_ack_is_counted_as_lost() -> None:
    relay, app, events = RelayModel(3, ack_state=lambda mid: "lease_lost" if mid == 2 else "acked"), App(), []
    code = asyncio.run(_agent(relay, app, events, once=True).run())
    assert code == EXIT_OK and relay.acked == [1, 3]
    assert [(e["message_id"], e["state"]) for e in events if e["event"] == "ack_refused"] == [(2, "lease_lost")]
    assert events[-1]["ack_lost"] == 1


def test_server_errors_are_retried_with_the_same_lease_and_a_401_stops_the_agent(slept: list[float]) -> None:
    relay, app, events = RelayModel(1), App(), []
    relay.fail_next = [503, 500]
    assert asyncio.run(_agent(relay, app, events, once=True).run()) == EXIT_OK
    assert relay.calls[:3] == ["fail /api/v1/relay/messages", "fail /api/v1/relay/messages", "pull"]
    assert relay.acked == [1]
    assert [e["after_attempts"] for e in events if e["event"] == "reconnected"] == [2]
    assert [e["attempt"] for e in events if e["event"] == "server_unreachable"] == [1]
    assert slept == [0.5, 1.0]
    assert relay.lease_ids[0].startswith("agt_") and len(set(relay.lease_ids[:3])) == 1
    assert relay.lease_ids[3] != relay.lease_ids[0]  # the next pull is a new lease

    relay, events = RelayModel(1), []
    relay.fail_next = [401]
    assert asyncio.run(_agent(relay, App(), events, once=True).run()) == EXIT_TOKEN_REJECTED
    relay, events = RelayModel(1), []
    relay.fail_next = [502] * 6
    slept.clear()
    assert asyncio.run(_agent(relay, App(), events, once=True).run()) == EXIT_SERVER_UNREACHABLE
    assert relay.calls == ["fail /api/v1/relay/messages"] * 6 and events[-1]["exit_code"] == EXIT_SERVER_UNREACHABLE
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_a_restart_sends_the_owed_acks_first_resumes_the_lease_and_marks_the_message_in_doubt(tmp_path: Path) -> None:
    path = tmp_path / "agent.journal"
    old = Journal(path)
    old.open()
    old.pulling("agt_dead")
    for mid in (1, 2):
        old.forwarding(mid, "agt_dead")
        old.forwarded(mid, "agt_dead")
    old.forwarding(3, "agt_dead")  # killed while forwarding 3
    old.sync()
    os.close(old._lock_fd)

    relay, app, events = RelayModel(4), App(), []
    for mid in (1, 2, 3):
        relay.leased[mid] = "agt_dead"
    code = asyncio.run(_agent(relay, app, events, once=True, journal=path).run())
    assert code == EXIT_OK
    assert relay.calls[:3] == ["ack 1", "ack 2", "pull"]
    assert relay.pulls[0]["lease_id"] == "agt_dead" and relay.pulls[1]["lease_id"] != "agt_dead"
    assert app.ids() == [3, 4] and relay.acked == [1, 2, 3, 4]
    assert [r.headers.get("x-hookbay-possible-duplicate") for r in app.seen] == ["1", None]
    replayed = [e for e in events if e["event"] == "journal_replayed"]
    assert replayed == [{"event": "journal_replayed", "acks": 2, "in_doubt": 3, "lease_id": "agt_dead"}]
    assert Journal(path).open().owed == {}
