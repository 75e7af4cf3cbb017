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
import re
import threading
import time
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
        self.fail_next: list[int | Exception] = []  # answered (then forgotten) before the real answer
        self.fail_acks: list[int] = []  # the same, for ack calls only
        self.nack_status = 200
        self.on_nack: Callable[[], None] = lambda: None
        self.agent: Agent | None = None
        self.stop_when_empty = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        if len(self.calls) > CALL_BUDGET:  # an agent that never stops fails instead of hanging
            raise AssertionError(f"more than {CALL_BUDGET} server calls: {self.calls[-5:]}")
        if request.method == "GET":
            self.lease_ids.append(request.url.params["lease_id"])
        if self.fail_next:
            self.calls.append(f"fail {request.url.path}")
            answer = self.fail_next.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return httpx.Response(answer, text="x" * 299 + "yz")
        path = request.url.path
        if self.fail_acks and path.endswith("/ack"):
            self.calls.append("fail ack")
            return httpx.Response(self.fail_acks.pop(0), json={"error": "down"})
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
                if state in ("acked", "already_acked"):
                    self.acked.append(a["id"])
                else:  # another agent holds it now: this one never sees it again
                    self.taken.append(a["id"])
                if state != "missing":  # a server that leaves an id out of its answer
                    results.append({"id": a["id"], "state": state})
            return httpx.Response(200, json={"results": results})
        if request.method == "POST" and path.endswith("/nack"):
            mid = int(path.split("/")[-2])
            body = json.loads(request.content)
            assert self.leased.get(mid) == body["lease_id"]
            self.calls.append(f"nack {mid}")
            self.nacks.append((mid, body["delay_s"], body["error"]))
            self.on_nack()
            return httpx.Response(self.nack_status, json={"state": "delayed"})
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


# --- the JSON events (`hookbay agent --json`, docs/relay.md): operators read and grep these lines ---


class _Clock:
    """The agent's ``time`` with a ``perf_counter`` that moves 12.3456 ms per reading."""

    def __init__(self) -> None:
        self.now = 100.0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def perf_counter(self) -> float:
        self.now += 0.0123456
        return self.now


def test_forwarded_and_failed_events_name_the_message_its_status_the_time_and_the_delay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "time", _Clock())
    relay, events = RelayModel(2), []
    relay.stop_when_empty = True
    app = App({2: [httpx.Response(500, text="e" * 250)]})
    asyncio.run(_agent(relay, app, events, min_backoff=0.123456, max_backoff=60.0).run())
    shown = [e for e in events if e["event"] in ("forwarded", "forward_failed", "nack_refused")]
    assert shown == [
        {"event": "forwarded", "message_id": 1, "request_id": "req_1", "status": 200, "ms": 12.35},
        {"event": "forward_failed", "message_id": 2, "request_id": "req_2", "status": 500,
         "error": "HTTP 500: " + "e" * 200, "retry_in_s": 0.12, "returned": 1},
        {"event": "forwarded", "message_id": 2, "request_id": "req_2", "status": 200, "ms": 12.35},
    ]
    assert relay.nacks == [(2, 0.123, "HTTP 500: " + "e" * 200)]


def test_server_trouble_is_reported_on_the_first_and_every_tenth_attempt_with_what_was_being_done(
        slept: list[float]) -> None:
    relay, events = RelayModel(0), []
    relay.stop_when_empty = True
    relay.fail_next = [httpx.ConnectError(""), httpx.ConnectError("refused by X"), *[503] * 18]
    assert asyncio.run(_agent(relay, App(), events, max_backoff=0.33333).run()) == EXIT_OK
    down = [e for e in events if e["event"] == "server_unreachable"]
    assert down == [
        {"event": "server_unreachable", "during": "pull", "error": "ConnectError", "attempt": 1, "retry_in_s": 0.33},
        {"event": "server_unreachable", "during": "pull", "error": "HTTP 503", "attempt": 10, "retry_in_s": 0.33},
        {"event": "server_unreachable", "during": "pull", "error": "HTTP 503", "attempt": 20, "retry_in_s": 0.33},
    ]
    assert [e for e in events if e["event"] == "reconnected"] == [{"event": "reconnected", "after_attempts": 20}]
    assert len(slept) == 20

    relay, events = RelayModel(0), []
    relay.fail_next = [httpx.ConnectError("refused by X")] * 6
    assert asyncio.run(_agent(relay, App(), events, once=True).run()) == EXIT_SERVER_UNREACHABLE
    assert {"event": "gave_up", "message": "pull: ConnectError: refused by X"} in events


def test_a_pull_refused_with_a_client_error_is_reported_and_retried_after_the_minimum_back_off(
        slept: list[float]) -> None:
    relay, events = RelayModel(1), []
    relay.stop_when_empty = True
    relay.fail_next = [409]
    assert asyncio.run(_agent(relay, App(), events, wait=5.0, batch=3, visibility=42.0, min_backoff=0.7).run()) == EXIT_OK
    assert [e for e in events if e["event"] == "server_error"] == [
        {"event": "server_error", "during": "pull", "status": 409, "body": "x" * 299 + "y"}]
    assert slept == [0.7] and relay.acked == [1]
    assert {k: v for k, v in relay.pulls[0].items() if k != "lease_id"} == {"wait": "5.0", "max": "3", "visibility": "42.0"}
    assert all(re.fullmatch(r"agt_[0-9a-f]{20}", lid) for lid in relay.lease_ids)

    relay, events = RelayModel(1), []
    relay.fail_next = [409]
    assert asyncio.run(_agent(relay, App(), events, once=True).run()) == EXIT_SERVER_UNREACHABLE
    assert events[-2] == {"event": "gave_up", "message": "pull: HTTP 409"}


def test_acks_the_server_does_not_confirm_are_each_counted_lost_and_reported(slept: list[float]) -> None:
    states = {1: "already_acked", 2: "missing", 3: "lease_lost", 4: "acked"}
    relay, app, events = RelayModel(4, ack_state=states.__getitem__), App(), []
    relay.fail_acks = [502]
    code = asyncio.run(_agent(relay, app, events, once=True, batch=1).run())
    assert code == EXIT_OK and app.ids() == [1, 2, 3, 4]
    assert [e for e in events if e["event"] in ("ack_refused", "server_unreachable")] == [
        {"event": "server_unreachable", "during": "ack", "error": "HTTP 502", "attempt": 1, "retry_in_s": 0.5},
        {"event": "ack_refused", "message_id": 2, "state": "missing"},
        {"event": "ack_refused", "message_id": 3, "state": "lease_lost"},
    ]
    assert events[-1]["ack_lost"] == 2

    relay, events = RelayModel(1), []
    relay.fail_acks = [400]  # answered, but not with results
    assert asyncio.run(_agent(relay, App(), events, once=True).run()) == EXIT_OK
    assert [e for e in events if e["event"] == "ack_refused"] == [
        {"event": "ack_refused", "message_id": 1, "state": "HTTP 400"}]


def test_nacks_carry_at_most_2000_characters_of_error_and_a_refused_nack_is_reported(slept: list[float]) -> None:
    relay, events = RelayModel(1), []
    relay.nack_status = 409
    calls: list[str] = []
    relay.on_nack = lambda: calls.append("x")
    original = relay.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/nack") and not calls:  # the first nack meets a server that is down
            relay.fail_next = [503]
            calls.append("down")
        return original(request)

    agent = _agent(relay, App({1: [httpx.ConnectError("z" * 3000)]}), events, once=True)
    agent.server = httpx.AsyncClient(base_url="http://hub.local", transport=httpx.MockTransport(handler))
    assert asyncio.run(agent.run()) == EXIT_FORWARD_FAILED
    assert [(m, d, len(err), err[:14]) for m, d, err in relay.nacks] == [(1, 0.0, 2000, "ConnectError: ")]
    assert [e for e in events if e["event"] in ("server_unreachable", "nack_refused")] == [
        {"event": "server_unreachable", "during": "nack", "error": "HTTP 503", "attempt": 1, "retry_in_s": 0.5},
        {"event": "nack_refused", "message_id": 1, "status": 409},
    ]


def test_a_redirect_is_a_failed_forward_and_an_empty_error_keeps_just_its_name() -> None:
    relay, events = RelayModel(2), []
    app = App({1: [httpx.Response(300)], 2: [httpx.ConnectError("")]})
    assert asyncio.run(_agent(relay, app, events, once=True).run()) == EXIT_FORWARD_FAILED
    assert [m for m, _, _ in relay.nacks] == [1] and relay.acked == []
    relay, events = RelayModel(2), []
    app = App({2: [httpx.ConnectError("")]})
    assert asyncio.run(_agent(relay, app, events, once=True).run()) == EXIT_FORWARD_FAILED
    assert relay.nacks == [(2, 0.0, "ConnectError")]
    relay, events = RelayModel(1), []
    app = App({1: [httpx.ConnectError("refused by X")]})
    assert asyncio.run(_agent(relay, app, events, once=True).run()) == EXIT_FORWARD_FAILED
    assert relay.nacks == [(1, 0.0, "ConnectError: refused by X")]


def test_a_message_without_its_body_is_forwarded_empty_and_marked_on_the_agents_own_thread() -> None:
    relay, events = RelayModel(1), []
    relay.queue[0]["body_b64"] = None
    threads: list[str] = []
    app = App()
    seen = app.handler

    def handler(request: httpx.Request) -> httpx.Response:
        threads.append(threading.current_thread().name)
        return seen(request)

    agent = _agent(relay, app, events, once=True)
    agent.local = httpx.Client(transport=httpx.MockTransport(handler))
    assert asyncio.run(agent.run()) == EXIT_OK
    assert app.seen[0].content == b"" and app.seen[0].headers["x-hookbay-body-missing"] == "1"
    assert threads[0].startswith("hookbay-forward")


def test_a_stop_during_a_batch_gives_the_rest_back_at_once_and_exits_cleanly() -> None:
    relay, events = RelayModel(3), []
    app = App()
    seen = app.handler
    agent = _agent(relay, app, events, once=True)

    def handler(request: httpx.Request) -> httpx.Response:
        agent.stop()  # SIGTERM while the first message is forwarded
        return seen(request)

    agent.local = httpx.Client(transport=httpx.MockTransport(handler))
    assert asyncio.run(agent.run()) == EXIT_OK
    assert app.ids() == [1] and relay.acked == [1]
    assert relay.nacks == [(2, 0, "agent stopping")]


def test_the_journal_keeps_the_lease_and_the_acks_owed_when_the_server_never_took_them(tmp_path: Path) -> None:
    path = tmp_path / "agent.journal"
    relay, events = RelayModel(1), []
    relay.fail_acks = [503] * 6
    assert asyncio.run(_agent(relay, App(), events, once=True, journal=path).run()) == EXIT_SERVER_UNREACHABLE
    rec = Journal(path).open()
    assert (rec.owed, rec.lease_id, rec.in_doubt) == ({1: relay.lease_ids[0]}, relay.lease_ids[0], None)


def test_the_journal_on_disk_marks_the_forward_in_progress_and_clears_it_when_it_failed(tmp_path: Path) -> None:
    """What a kill -9 would leave: the journal file as it is during the forward, and at the nack."""
    path = tmp_path / "agent.journal"
    relay, events = RelayModel(1), []
    app = App({1: [httpx.Response(500)]})
    snapshots: list[bytes] = []
    seen = app.handler

    def handler(request: httpx.Request) -> httpx.Response:
        snapshots.append(path.read_bytes())
        return seen(request)

    relay.on_nack = lambda: snapshots.append(path.read_bytes())
    agent = _agent(relay, app, events, once=True, journal=path)
    agent.local = httpx.Client(transport=httpx.MockTransport(handler))
    assert asyncio.run(agent.run()) == EXIT_FORWARD_FAILED
    assert len(snapshots) == 2
    for i, data in enumerate(snapshots):
        copy = tmp_path / f"copy{i}.journal"
        copy.write_bytes(data)
        assert Journal(copy).open().in_doubt == (1 if i == 0 else None)


@pytest.mark.parametrize(("owed", "in_doubt", "shown"), [(True, False, True), (False, True, True), (False, False, False)])
def test_a_restart_reports_the_journal_only_when_it_owed_something(
        tmp_path: Path, owed: bool, in_doubt: bool, shown: bool) -> None:
    path = tmp_path / "agent.journal"
    old = Journal(path)
    old.open()
    old.pulling("agt_dead")
    if owed:
        old.forwarding(1, "agt_dead")
        old.forwarded(1, "agt_dead")
    if in_doubt:
        old.forwarding(2, "agt_dead")
    old.sync()
    os.close(old._lock_fd)
    relay, events = RelayModel(0), []
    relay.leased[1] = "agt_dead"
    assert asyncio.run(_agent(relay, App(), events, once=True, journal=path).run()) == EXIT_OK
    assert any(e["event"] == "journal_replayed" for e in events) is shown
