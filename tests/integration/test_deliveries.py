"""Actions and deliveries end to end over real HTTP, on SQLite and PostgreSQL: signed forwards
verified with the `standardwebhooks` library, retries and dead letters, SSRF refusal, email to a
real SMTP server (aiosmtpd), Mailchimp pushes to a local server speaking its API, and the
per-destination concurrency limit."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook

from hookbay.ids import now_us
from hookbay.results import ParseReceipt, PlannedDelivery, ProcessResult
from hookbay.store import Store
from hookbay.store.deliveries import AttemptResult
from tests.conftest import free_port, make_settings
from tests.fakes import mailchimp
from tests.fakes.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
CONTACT = orjson.loads((ROOT / "bench" / "contact.json").read_bytes())
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _admin(live, method: str, path: str, **kw):  # type: ignore[no-untyped-def]
    with live.admin() as c:
        return c.request(method, path, **kw)


def _send(live, src, body) -> str:  # type: ignore[no-untyped-def]
    r = live.client.post(f"/V1/Data/{src['token']}", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def _deliveries(live, timeout: float = 15, until=lambda ds: True, **params) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        items = _admin(live, "GET", "/api/v1/deliveries", params=params).json()["items"]
        if items and until(items):
            return list(items)
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries not settled: {items}")
        time.sleep(0.05)


def _settled(states: tuple[str, ...] = ("succeeded", "dead", "skipped")):  # type: ignore[no-untyped-def]
    return lambda ds: all(d["state"] in states for d in ds)


def _forward_source(live, url: str, **action: Any) -> dict:  # type: ignore[no-untyped-def]
    return live.create_source(config={"parser": "contact", "allow_private_destinations": True, "actions": [
        {"type": "forward", "url": url, "secret": SECRET, **action}]})


def test_forward_is_signed_and_verifies_with_standardwebhooks(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    src = _forward_source(live, receiver.url + "/hook", name="crm")
    rid = _send(live, src, CONTACT)
    [d] = _deliveries(live, request_id=rid, until=_settled())
    assert d["state"] == "succeeded" and d["action_name"] == "crm" and d["attempts"] == 1
    [got] = receiver.received
    assert got.path == "/hook"
    payload = Webhook(SECRET).verify(got.body, got.headers)
    assert payload["type"] == "hookbay.record" and payload["request_id"] == rid
    assert payload["data"]["contact"]["email"] == "Ada.Lovelace@example.com"
    assert payload["profile_id"]
    assert got.headers["webhook-id"] == d["id"]
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        Webhook("whsec_" + "A" * 32).verify(got.body, got.headers)
    detail = _admin(live, "GET", f"/api/v1/deliveries/{d['id']}").json()
    [a] = detail["attempt_log"]
    assert a["status"] == 200 and a["outcome"] == "ok" and '"ok":true' in a["response_excerpt"]


def test_raw_forward_sends_the_exact_body(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"allow_private_destinations": True, "actions": [
        {"type": "forward", "url": receiver.url, "body": "raw", "secret": SECRET}]})
    raw = b'{"a": 1,   "b": [true]}'
    r = live.client.post(f"/V1/Data/{src['token']}", content=raw, headers={"content-type": "application/json"})
    _deliveries(live, request_id=r.json()["request_id"], until=_settled())
    [got] = receiver.received
    assert got.body == raw and got.headers["content-type"] == "application/json"
    Webhook(SECRET).verify(got.body, got.headers)


def test_condition_selects_actions(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact", "allow_private_destinations": True, "actions": [
        {"type": "forward", "url": receiver.url + "/opted-in", "secret": SECRET,
         "when": "EmailPermission == true and ProviderType == 3"},
        {"type": "forward", "url": receiver.url + "/all", "secret": SECRET}]})
    no = copy.deepcopy(CONTACT)
    no["EmailPermission"] = False
    rid_yes, rid_no = _send(live, src, CONTACT), _send(live, src, no)
    assert sorted(d["action_index"] for d in _deliveries(live, request_id=rid_yes, until=_settled())) == [0, 1]
    assert [d["action_index"] for d in _deliveries(live, request_id=rid_no, until=_settled())] == [1]
    assert sorted(r.path for r in receiver.received) == ["/all", "/all", "/opted-in"]


def test_private_destination_refused_unless_allowed(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"actions": [{"type": "forward", "url": receiver.url, "secret": SECRET}]})
    [d] = _deliveries(live, request_id=_send(live, src, {"a": 1}), until=_settled())
    assert d["state"] == "dead" and d["attempts"] == 1
    assert "permanent" in d["last_error"] and "127.0.0.1" in d["last_error"]
    assert receiver.received == []


def test_retries_5xx_then_succeeds(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.statuses.extend([503, 500])
    src = _forward_source(live, receiver.url, retry_schedule=[1, 1, 1])
    [d] = _deliveries(live, request_id=_send(live, src, CONTACT), until=_settled(), timeout=20)
    assert d["state"] == "succeeded" and d["attempts"] == 3
    log = _admin(live, "GET", f"/api/v1/deliveries/{d['id']}").json()["attempt_log"]
    assert [(a["status"], a["outcome"]) for a in log] == [(503, "retry"), (500, "retry"), (200, "ok")]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # same id on every retry


def test_4xx_dead_letters_at_once_and_bulk_retry(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.default_status = 400
    src = _forward_source(live, receiver.url)
    rids = [_send(live, src, CONTACT) for _ in range(3)]
    for rid in rids:
        [d] = _deliveries(live, request_id=rid, until=_settled())
        assert d["state"] == "dead" and d["attempts"] == 1 and d["last_status"] == 400
        assert d["last_error"].startswith("permanent failure")
    dead = _admin(live, "GET", "/api/v1/deliveries", params={"state": "dead", "source": src["id"]}).json()["items"]
    assert len(dead) == 3
    receiver.default_status = 200
    one = _admin(live, "POST", f"/api/v1/deliveries/{dead[0]['id']}/retry")
    assert one.status_code == 200 and one.json()["state"] in ("pending", "running", "succeeded")
    _deliveries(live, request_id=dead[0]["request_id"], until=lambda ds: ds[0]["state"] == "succeeded")
    again = _admin(live, "POST", f"/api/v1/deliveries/{dead[0]['id']}/retry")  # succeeded: allowed again
    assert again.status_code == 200
    _deliveries(live, request_id=dead[0]["request_id"], until=lambda ds: ds[0]["state"] == "succeeded")
    none = _admin(live, "POST", "/api/v1/deliveries/retry", json={"source": src["id"], "error": "HTTP 404"}).json()
    assert none["count"] == 0
    bulk = _admin(live, "POST", "/api/v1/deliveries/retry", json={"source": src["id"], "error": "HTTP 400"}).json()
    assert bulk["count"] == 2 and set(bulk["ids"]) == {d["id"] for d in dead[1:]}
    for rid in rids:
        _deliveries(live, request_id=rid, until=lambda ds: ds[0]["state"] == "succeeded")
    assert len(receiver.received) == 3 + 1 + 3


def test_retries_exhausted_become_dead_letters(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.default_status = 502
    src = _forward_source(live, receiver.url, retry_schedule=[1])
    [d] = _deliveries(live, request_id=_send(live, src, CONTACT), until=_settled(), timeout=20)
    assert d["state"] == "dead" and d["attempts"] == 2
    assert d["last_error"].startswith("retries exhausted after 2 attempts")


def test_429_retry_after_is_honoured(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.statuses.append(429)
    receiver.extra_headers["Retry-After"] = "2"
    src = _forward_source(live, receiver.url, retry_schedule=[3600])
    rid = _send(live, src, CONTACT)
    [d] = _deliveries(live, request_id=rid, until=lambda ds: ds[0]["attempts"] == 1 and ds[0]["state"] == "pending")
    wait = (_iso_us(d["next_attempt_at"]) - _iso_us(d["updated_at"])) / 1e6
    assert 1.9 <= wait <= 2.5  # the hint, not the 1-hour schedule
    [d] = _deliveries(live, request_id=rid, until=_settled(), timeout=10)
    assert d["state"] == "succeeded" and d["attempts"] == 2


def _iso_us(s: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1e6)


def test_slow_destination_does_not_starve_others(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    live = live_server_factory(db_url, delivery_per_destination=2, delivery_concurrency=8)
    slow, fast = Receiver(delay_s=0.5).start(), Receiver().start()
    try:
        s_src = _forward_source(live, slow.url)
        f_src = _forward_source(live, fast.url)
        for _ in range(8):
            _send(live, s_src, CONTACT)
        t0 = time.monotonic()
        for _ in range(8):
            _send(live, f_src, CONTACT)
        _deliveries(live, source=f_src["id"], until=lambda ds: len(ds) == 8 and _settled()(ds))
        fast_done = time.monotonic() - t0
        _deliveries(live, source=s_src["id"], until=lambda ds: len(ds) == 8 and _settled()(ds), timeout=30)
        assert slow.max_concurrent <= 2
        assert len(slow.received) == 8 and len(fast.received) == 8
        assert fast_done < 1.5  # the slow host needs 8 × 0.5 s / 2 = 2 s
    finally:
        slow.stop()
        fast.stop()


class _Collector:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def message(self, i: int) -> Message:
        return message_from_bytes(self.envelopes[i].content)


def test_email_action_sends_and_respects_opt_out(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    handler = _Collector()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        live = live_server_factory(db_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="crm@hookbay.test")
        src = live.create_source(config={"parser": "contact", "actions": [{
            "type": "email", "subject": "Welcome, {{ contact.first_name }}!",
            "text": "Hello {{ contact.first_name }} from {{ source.name }}",
            "html": "<p>Hello {{ contact.first_name }}</p>"}]})
        rid = _send(live, src, CONTACT)
        [d] = _deliveries(live, request_id=rid, until=_settled())
        assert d["state"] == "succeeded", d
        [env] = handler.envelopes
        assert env.rcpt_tos == ["Ada.Lovelace@example.com"] and env.mail_from == "crm@hookbay.test"
        msg = handler.message(0)
        assert msg["Subject"] == "Welcome, Ada!"
        parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk()
                 if not p.is_multipart()}
        assert parts["text/plain"].strip() == f"Hello Ada from {src['name']}"
        assert "<p>Hello Ada</p>" in parts["text/html"]

        opted_out = copy.deepcopy(CONTACT)
        opted_out["EmailPermission"] = False
        [d2] = _deliveries(live, request_id=_send(live, src, opted_out), until=_settled())
        assert d2["state"] == "skipped"
        log = _admin(live, "GET", f"/api/v1/deliveries/{d2['id']}").json()["attempt_log"]
        assert "opt-out" in log[0]["response_excerpt"]
        assert len(handler.envelopes) == 1
    finally:
        ctl.stop()


def test_mailchimp_push(db_url: str, live_server_factory, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    key = "0123456789abcdef0123456789abcdef-us6"
    app = mailchimp.create_app(key, {"list1", "list2"})
    base, stop = mailchimp.run_in_thread(app)
    monkeypatch.setenv("HOOKBAY_MAILCHIMP_API_KEY", key)
    try:
        live = live_server_factory(db_url)
        src = live.create_source(config={"parser": "contact", "allow_private_destinations": True, "actions": [
            {"type": "mailchimp", "base_url": base, "when": "ProviderType == 3"}]})
        body = copy.deepcopy(CONTACT)
        body["ProviderType"] = 3
        body["ListIds"] = ["list1", "list2"]
        [d] = _deliveries(live, request_id=_send(live, src, body), until=_settled())
        assert d["state"] == "succeeded", d
        h = mailchimp.md5_lower("Ada.Lovelace@example.com")
        for lst in ("list1", "list2"):
            m = app.state.members[(lst, h)]
            assert m["status"] == "subscribed" and m["merge_fields"]["FNAME"] == "Ada"
            assert app.state.tags[(lst, h)] == set(CONTACT.get("Interests") or [])
        bad = copy.deepcopy(body)
        bad["ListIds"] = ["nope"]
        [d2] = _deliveries(live, request_id=_send(live, src, bad), until=_settled())
        assert d2["state"] == "dead" and d2["last_status"] == 404
        other = copy.deepcopy(body)
        other["ProviderType"] = 2
        rid = _send(live, src, other)
        live.wait_state(rid)
        time.sleep(0.3)
        assert _admin(live, "GET", "/api/v1/deliveries", params={"request_id": rid}).json()["items"] == []
    finally:
        stop()


def test_lease_expiry_reclaims_and_stale_worker_cannot_finish(db_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = Store(make_settings(db_url, tmp_path).effective_database_url)
        store.migrate()
        await store.start()
        try:
            now = now_us()

            def seed(conn: Any) -> None:
                from hookbay.store import schema

                conn.execute(schema.deliveries.insert().values(
                    id="dlv_x", request_id="req_x", record_idx=0, action_idx=0, source_id="s", client_id="c",
                    action_type="forward", action_name="f", destination="http:h:80", state="pending",
                    attempts=0, run_after=now, created_at=now, updated_at=now))

            await store.write(seed)
            [first] = await store.claim_deliveries("w1", 10, 0.2)
            assert await store.claim_deliveries("w2", 10, 0.2) == []
            assert await store.claim_deliveries("w2", 10, 30, {"http:h:80"}) == []
            await asyncio.sleep(0.3)
            [second] = await store.claim_deliveries("w2", 10, 30)
            assert second.id == first.id and second.attempts == 2
            assert (first.locked_by, second.locked_by) == ("w1", "w2") and second.locked_until > first.locked_until
            assert (second.state, second.action_name, second.run_after) == ("running", "f", now)  # the whole row
            res = AttemptResult("succeeded", now, 1, "ok", 200)
            assert await store.finish_delivery(first, res) is False
            assert await store.finish_delivery(second, res) is True
            row = await store.get_delivery("dlv_x")
            assert row.state == "succeeded" and [a.attempt for a in row.attempt_log] == [2]
        finally:
            await store.close()

    asyncio.run(main())


def test_deliveries_are_created_once_even_if_a_job_finishes_twice(db_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = Store(make_settings(db_url, tmp_path).effective_database_url)
        store.migrate()
        await store.start()
        try:
            res = ProcessResult(
                request_id="req_y", source_id="s", client_id="c", received_at=now_us(), parser="generic",
                parser_version="1", state="processed", records=[{"a": 1}], receipt=ParseReceipt(),
                deliveries=[PlannedDelivery(record_idx=0, action_idx=0, action_type="forward", action_name="f",
                                            destination="http:h:80")])
            await store.finish_jobs([copy.deepcopy(res)])
            await store.finish_jobs([copy.deepcopy(res)])
            await store.finish_jobs([copy.deepcopy(res)], replace=True)
            from hookbay.store.deliveries import DeliveryFilter

            assert len(await store.list_deliveries(DeliveryFilter(request_id="req_y"))) == 1
        finally:
            await store.close()

    asyncio.run(main())


def test_invalid_action_config_is_rejected(live) -> None:  # type: ignore[no-untyped-def]
    for action, needle in (
        ({"type": "forward", "url": "ftp://x"}, "url"),
        ({"type": "forward", "url": "http://x", "when": "a == "}, "condition"),
        ({"type": "email", "subject": "{{ oops", "text": "x"}, "subject template"),
        ({"type": "forward", "url": "http://x", "secret": "nope"}, "secret"),
        ({"type": "sms", "to": "x"}, "type"),
    ):
        with live.admin() as c:
            r = c.post("/api/v1/sources", json={"name": "bad", "client_id": "acme", "config": {"actions": [action]}})
        assert r.status_code == 422, (action, r.text)
        assert r.json()["error"]["code"] == "invalid_request" and needle in r.text.lower(), r.text


def test_generated_forward_secret_is_stable(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"allow_private_destinations": True, "actions": [
        {"type": "forward", "url": receiver.url}]})
    secret = src["config"]["actions"][0]["secret"]
    assert secret.startswith("whsec_")
    again = _admin(live, "GET", f"/api/v1/sources/{src['id']}").json()
    assert again["config"]["actions"][0]["secret"] == secret
    _deliveries(live, request_id=_send(live, src, {"x": 1}), until=_settled())
    Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)





def test_deliveries_survive_kill_9(db_url: str, tmp_path: Path) -> None:
    """kill -9 `hookbay serve` while deliveries are in flight; after a restart every delivery
    succeeds (at least once, identified by its webhook-id) and none is lost."""
    import os
    import signal
    import subprocess

    import httpx

    from tests.conftest import ADMIN_TOKEN, cli_migrate
    from tests.integration.test_cli import hb, start_server

    rcv = Receiver(delay_s=0.1).start()
    env = dict(os.environ)
    env.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_PORT": str(free_port()),
                "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN, "HOOKBAY_LOG_LEVEL": "warning",
                "HOOKBAY_WORKER_POLL_SECONDS": "0.2", "HOOKBAY_DELIVERY_LEASE_SECONDS": "2",
                "HOOKBAY_DELIVERY_PER_DESTINATION": "2"})
    cli_migrate(env)
    actions = tmp_path / "a.yaml"
    actions.write_text(f"- type: forward\n  url: {rcv.url}/x\n")
    src = orjson.loads(hb(env, "source", "create", "--name", "K", "--client", "acme", "--actions", str(actions),
                          "--allow-private-destinations", "--json").stdout)
    log = (tmp_path / "serve.log").open("wb")
    server: subprocess.Popen[bytes] | None = start_server(env, log)
    try:
        n = 60
        for i in range(n):
            assert httpx.post(src["ingest_url"], json={"i": i}).status_code == 200
        deadline = time.monotonic() + 20
        while len(rcv.received) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert server is not None
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        at_crash = len(rcv.received)
        assert at_crash < n, "everything was delivered before the crash; the test proves nothing"
        server = start_server(env, log)
        deadline = time.monotonic() + 60
        while True:
            ds = orjson.loads(hb(env, "deliveries", "list", "--limit", "1000", "--json").stdout)
            if len(ds) == n and all(d["state"] == "succeeded" for d in ds):
                break
            assert time.monotonic() < deadline, [d["state"] for d in ds]
            time.sleep(0.3)
        got = [r.headers["webhook-id"] for r in rcv.received]
        assert set(got) == {d["id"] for d in ds}
        assert len(got) - len(set(got)) <= 2  # only those in flight at the kill may arrive twice
    finally:
        if server is not None:
            server.kill()
            server.wait()
        log.close()
        rcv.stop()



def test_test_endpoint_shows_actions_that_would_run_and_runs_none(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"parser": "contact", "allow_private_destinations": True, "actions": [
        {"type": "forward", "url": receiver.url, "name": "crm", "when": "ProviderType == 3"},
        {"type": "forward", "url": receiver.url, "name": "never", "when": "ProviderType == 99"}]})
    r = live.client.post(f"/V1/Test/{src['token']}", json=CONTACT)
    assert r.status_code == 200 and r.json()["stored"] is False
    assert r.json()["actions"] == [{"record_idx": 0, "action_idx": 0, "action_type": "forward", "action_name": "crm"}]
    time.sleep(0.5)
    assert receiver.received == []
    assert _admin(live, "GET", "/api/v1/deliveries").json()["items"] == []


def test_queued_deliveries_never_outlive_their_lease(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    """A destination slower than the lease: every delivery is still sent exactly once, one at a time."""
    live = live_server_factory(db_url, delivery_per_destination=1, delivery_lease_seconds=1)
    slow = Receiver(delay_s=0.3).start()
    try:
        src = _forward_source(live, slow.url)
        for _ in range(8):
            _send(live, src, CONTACT)
        _deliveries(live, source=src["id"], until=lambda ds: len(ds) == 8 and _settled()(ds), timeout=30)
        got = [r.headers["webhook-id"] for r in slow.received]
        assert len(got) == 8 and len(set(got)) == 8
        assert slow.max_concurrent == 1
    finally:
        slow.stop()


@pytest.mark.parametrize("failure", ["EAI_AGAIN", "EAI_NONAME", "timeout"])
def test_dns_failures_are_retried_then_dead(live, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:  # type: ignore[no-untyped-def]
    """A resolver we control answers for ``hooks.example.test``: a failing nameserver (EAI_AGAIN),
    NXDOMAIN (EAI_NONAME) or silence. Each is retried like a network error; only when the
    schedule runs out is the delivery dead (it used to be dead after one attempt)."""
    import socket as _socket

    from hookbay.actions import ssrf

    real = ssrf.getaddrinfo
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[Any]:
        if host != "hooks.example.test":
            return await real(host, port)
        asked.append(host)
        if failure == "timeout":
            await asyncio.sleep(3600)
        code = getattr(_socket, failure)
        raise _socket.gaierror(code, "Temporary failure in name resolution" if failure == "EAI_AGAIN"
                               else "Name or service not known")

    monkeypatch.setattr(ssrf, "getaddrinfo", resolver)
    if failure == "timeout":
        monkeypatch.setattr(ssrf.check_destination, "__kwdefaults__", {"allow_private": False, "resolve_timeout": 0.2})
    src = live.create_source(config={"parser": "contact", "actions": [
        {"type": "forward", "url": "https://hooks.example.test/in", "secret": SECRET, "retry_schedule": [1, 1]}]})
    [d] = _deliveries(live, request_id=_send(live, src, CONTACT), until=_settled(), timeout=30)
    assert d["state"] == "dead" and d["attempts"] == 3, d
    assert d["last_error"].startswith("retries exhausted after 3 attempts"), d["last_error"]
    assert "cannot resolve host 'hooks.example.test'" in d["last_error"]
    assert len(asked) == 3


def test_forward_never_follows_a_redirect(live, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 row 15: a destination that answers with a redirect must not send the delivery on to
    the address it names (which the outbound-address guard never checked). The 307 is the answer."""
    elsewhere = Receiver().start()
    try:
        receiver.statuses.append(307)
        receiver.extra_headers["Location"] = elsewhere.url + "/stolen"
        src = _forward_source(live, receiver.url + "/hook")
        [d] = _deliveries(live, request_id=_send(live, src, CONTACT), until=_settled())
        assert d["state"] == "dead" and d["last_status"] == 307, d
        assert len(receiver.received) == 1 and receiver.received[0].path == "/hook"
        assert elsewhere.received == []
    finally:
        elsewhere.stop()


def test_mailchimp_base_url_is_checked_by_the_guard(db_url: str, live_server_factory,  # type: ignore[no-untyped-def]
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #19 row 8: a tenant-set Mailchimp ``base_url`` is an outbound destination like a forward
    URL: pointing it at a loopback or private address is refused unless the source allows private
    destinations, and nothing reaches that address."""
    key = "0123456789abcdef0123456789abcdef-us6"
    app = mailchimp.create_app(key, {"list1"})
    base, stop = mailchimp.run_in_thread(app)
    monkeypatch.setenv("HOOKBAY_MAILCHIMP_API_KEY", key)
    try:
        live = live_server_factory(db_url)
        src = live.create_source(config={"parser": "contact", "actions": [{"type": "mailchimp", "base_url": base}]})
        body = {**copy.deepcopy(CONTACT), "ListIds": ["list1"]}
        [d] = _deliveries(live, request_id=_send(live, src, body), until=_settled())
        assert d["state"] == "dead" and d["last_status"] is None, d
        assert "not a public address" in d["last_error"] or "private" in d["last_error"], d["last_error"]
        assert app.state.members == {}
    finally:
        stop()


def test_email_consent_is_the_profiles_ledger_at_send_time(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 row 9: whether a marketing email may be sent is decided by the profile's consent
    ledger when it is sent, not by the flags of the record that triggered it. A contact who opted out
    earlier and then sends a form without any consent field is still opted out."""
    handler = _Collector()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        live = live_server_factory(db_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="crm@hookbay.test")
        src = live.create_source(config={"parser": "contact", "actions": [{
            "type": "email", "subject": "Hello", "text": "Hello {{ contact.first_name }}"}]})
        opted_out = {**copy.deepcopy(CONTACT), "EmailPermission": False}
        [d1] = _deliveries(live, request_id=_send(live, src, opted_out), until=_settled())
        assert d1["state"] == "skipped", d1
        silent = {k: v for k, v in copy.deepcopy(CONTACT).items() if k != "EmailPermission"}
        rid = _send(live, src, silent)
        receipt = live.wait_state(rid)
        assert "consents" not in receipt["records"][0] or not [
            c for c in receipt["records"][0]["consents"] if c.get("channel") == "email"], receipt["records"][0]
        [d2] = _deliveries(live, request_id=rid, until=_settled())
        assert d2["state"] == "skipped", d2
        log = _admin(live, "GET", f"/api/v1/deliveries/{d2['id']}").json()["attempt_log"]
        assert "opt-out" in log[0]["response_excerpt"]
        assert handler.envelopes == []
    finally:
        ctl.stop()
