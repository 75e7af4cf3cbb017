"""Alerts end to end on SQLite and PostgreSQL: rules set over the API, evaluated by the worker side,
sent to a real SMTP server (aiosmtpd), a local receiver that verifies the Standard Webhooks
signature, and a local Slack stand-in that accepts only Slack's body shape; the open → repeat →
resolved lifecycle, client scoping, and each condition."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook

from hookbay.ops.alerts import AlertEvaluator
from hookbay.store import open_store
from hookbay.store.alerts import AlertStore, Transition
from tests.conftest import ADMIN_TOKEN, free_port, make_settings
from tests.fakes.receiver import Receiver
from tests.fakes.slack import FakeSlack

ROOT = Path(__file__).resolve().parents[2]
CONTACT = orjson.loads((ROOT / "bench" / "contact.json").read_bytes())
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class _Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[_Mailbox, int]]:
    box, port = _Mailbox(), free_port()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    yield box, port
    ctl.stop()


def _until(fn: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _alerts(live, headers: dict[str, str] = ADMIN, **params: Any) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    r = live.client.get("/api/v1/alerts", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json())


def _rule(live, headers: dict[str, str] = ADMIN, status: int = 201, **body: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body.setdefault("name", "rule-" + str(time.monotonic_ns())[-6:])
    r = live.client.post("/api/v1/alert-rules", json=body, headers=headers)
    assert r.status_code == status, r.text
    return dict(r.json())


def test_dead_letter_alert_opens_repeats_and_resolves_on_every_channel(db_url: str, live_server_factory,  # type: ignore[no-untyped-def]
                                                                      smtp: tuple[_Mailbox, int]) -> None:
    box, port = smtp
    hook, dest, slack = Receiver().start(), Receiver(default_status=400).start(), FakeSlack()
    try:
        live = live_server_factory(db_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="alerts@hookbay.test",
                                   alert_interval_seconds=0.2)
        src = live.create_source(name="Web Form", config={"parser": "contact", "allow_private_destinations": True,
                                                          "actions": [{"type": "forward", "url": dest.url}]})
        rule = _rule(live, name="dead letters", condition="dead_letter", minutes=0.06, repeat_minutes=0.02,
                     allow_private_destinations=True, channels=[
                         {"type": "email", "to": "ops@example.net"},
                         {"type": "webhook", "url": hook.url + "/alerts", "secret": SECRET},
                         {"type": "slack", "url": slack.url}])
        assert rule["client_id"] is None and rule["channels"][1]["secret"] == SECRET
        time.sleep(0.5)
        assert _alerts(live) == []  # nothing dead yet: nothing opens

        r = live.client.post(f"/V1/Data/{src['token']}", json=CONTACT)
        assert r.status_code == 200
        events = lambda: [Webhook(SECRET).verify(m.body, m.headers)["type"] for m in hook.received]  # noqa: E731
        _until(lambda: "hookbay.alert.resolved" in events(), timeout=20, what="resolved")

        # opened once, repeated while open (at most every 1.2 s over a 3.6 s window), then resolved
        seen = events()
        assert seen[0] == "hookbay.alert.opened" and seen[-1] == "hookbay.alert.resolved"
        assert seen.count("hookbay.alert.opened") == 1 and seen.count("hookbay.alert.resolved") == 1
        assert 1 <= seen.count("hookbay.alert.repeated") <= 4
        [a] = _alerts(live)
        assert a["state"] == "resolved" and a["subject"] == src["id"] and a["rule_id"] == rule["id"]
        assert a["notifications"] == len(seen) and a["last_error"] is None
        assert a["detail"]["dead_letters"] == 1 and a["detail"]["action_types"] == ["forward"]
        first = Webhook(SECRET).verify(hook.received[0].body, hook.received[0].headers)
        assert first["alert"]["id"] == a["id"] and first["alert"]["condition"] == "dead_letter"
        assert hook.received[0].headers["webhook-id"] == f"{a['id']}.1"
        with pytest.raises(Exception):  # noqa: B017 - any verification failure
            Webhook("whsec_" + "A" * 32).verify(hook.received[0].body, hook.received[0].headers)

        # the same messages by email and to Slack, which accepted every body
        _until(lambda: len(box.envelopes) == len(seen) and len(slack.accepted) == len(seen), what="email+slack")
        subjects = [message_from_bytes(e.content)["Subject"] for e in box.envelopes]
        assert subjects[0].startswith("[hookbay] ALERT: dead letters: 1 dead letter(s)")
        assert subjects[-1].startswith("[hookbay] RESOLVED: dead letters")
        assert all(e.rcpt_tos == ["ops@example.net"] and e.mail_from == "alerts@hookbay.test" for e in box.envelopes)
        assert slack.refused == []
        assert slack.accepted[0]["text"].startswith("[hookbay] ALERT: dead letters")
        assert slack.accepted[-1]["text"].startswith("[hookbay] RESOLVED")
        # no personal data from the request in any message
        every = [m.body for m in hook.received] + [e.content for e in box.envelopes] + [
            orjson.dumps(b) for b in slack.accepted]
        assert not any(b"Lovelace" in b or b"example.com" in b for b in every)
        assert "Web Form" in subjects[0]
    finally:
        hook.stop()
        dest.stop()
        slack.stop()


def test_private_channel_address_needs_the_admin_flag(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    hook = Receiver().start()
    try:
        live = live_server_factory(db_url, alert_interval_seconds=0.2)
        live.create_source(client_id="acme")
        rule = _rule(live, condition="silence", minutes=0.001, channels=[{"type": "webhook", "url": hook.url}])
        secret = rule["channels"][0]["secret"]
        assert secret.startswith("whsec_")  # generated
        [a] = _until(lambda: [x for x in _alerts(live) if x["last_error"]], what="refused send")
        assert "not a public address" in a["last_error"] or "private" in a["last_error"], a["last_error"]
        assert hook.received == []
        r = live.client.patch(f"/api/v1/alert-rules/{rule['id']}", json={"allow_private_destinations": True,
                                                                         "repeat_minutes": 0.01}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["channels"][0]["secret"] == secret  # merge patch kept the rest
        got = _until(lambda: list(hook.received), what="webhook after the flag")
        assert Webhook(secret).verify(got[0].body, got[0].headers)["type"] == "hookbay.alert.repeated"
    finally:
        hook.stop()


def test_client_tokens_see_and_set_only_their_own_rules_and_alerts(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    live = live_server_factory(db_url, alert_interval_seconds=0.2)
    mine_src = live.create_source(client_id="acme")
    theirs_src = live.create_source(client_id="globex")
    tok = live.client.post("/api/v1/tokens", json={"name": "a", "client_id": "acme"}, headers=ADMIN).json()["token"]
    acme = {"Authorization": f"Bearer {tok}"}

    mine = _rule(live, acme, condition="silence", minutes=0.005)
    assert mine["client_id"] == "acme"
    _rule(live, acme, 404, condition="silence", minutes=1, client_id="globex")
    _rule(live, acme, 422, condition="silence", minutes=1, source_id=theirs_src["id"])
    _rule(live, acme, 403, condition="processing_lag", seconds=5)
    _rule(live, acme, 403, condition="not_ready")
    _rule(live, acme, 403, condition="silence", minutes=1, allow_private_destinations=True,
          channels=[{"type": "slack", "url": "http://127.0.0.1:9/x"}])
    _rule(live, acme, 422, condition="error_ratio")  # needs threshold
    _rule(live, acme, 422, condition="silence", minutes=1, channels=[{"type": "email", "to": "a@b.c, d@e.f"}])
    glob = _rule(live, condition="silence", minutes=0.005)  # admin, global: every client's sources
    theirs = _rule(live, condition="silence", minutes=0.005, client_id="globex")

    assert [r["id"] for r in live.client.get("/api/v1/alert-rules", headers=acme).json()] == [mine["id"]]
    assert live.client.get("/api/v1/alert-rules", params={"client_id": "globex"}, headers=acme).status_code == 404
    assert {r["id"] for r in live.client.get("/api/v1/alert-rules", headers=ADMIN).json()} == {
        mine["id"], glob["id"], theirs["id"]}

    subjects = lambda rule: {a["subject"] for a in _alerts(live, rule_id=rule["id"], state="open")}  # noqa: E731
    _until(lambda: subjects(glob) == {mine_src["id"], theirs_src["id"]}, what="global rule on both clients")
    _until(lambda: subjects(mine) == {mine_src["id"]} and subjects(theirs) == {theirs_src["id"]}, what="scoped")
    seen = _alerts(live, acme)
    assert seen and {a["rule_id"] for a in seen} == {mine["id"]} and {a["client_id"] for a in seen} == {"acme"}
    # deleting a rule closes its open alerts (quietly)
    assert live.client.delete(f"/api/v1/alert-rules/{mine['id']}", headers=acme).status_code == 204
    assert {a["state"] for a in _alerts(live, acme)} == {"resolved"}
    assert live.client.get(f"/api/v1/alert-rules/{mine['id']}", headers=acme).json()["error"]["code"] == "not_found"


def _second_process(live, **over: Any) -> tuple[Any, AlertEvaluator]:  # type: ignore[no-untyped-def]
    """A store and an evaluator of their own, as a separate `hookbay worker` process would have."""
    s = live.settings.model_copy(update=over)
    store = open_store(s)
    return store, AlertEvaluator(store, s, http=httpx.AsyncClient(), holder="worker-2")  # same lease holder


def test_each_condition_opens_and_clears(db_url: str, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    """The server runs no worker (jobs stay pending: processing lags); the evaluator runs in a
    store of its own, as in a separate worker process, and its state is all in the database."""
    live = live_server_factory(db_url, run_worker=False)
    keyed = live.create_source(name="keyed", api_key=True)
    relay = live.create_source(name="relayed", config={"relay": True})
    agent_tok = live.client.post(f"/api/v1/sources/{relay['id']}/relay-tokens", json={"name": "a"},
                                 headers=ADMIN).json()["token"]
    url = f"/V1/Data/{keyed['token']}"
    for _ in range(3):
        assert live.client.post(url, json={"a": 1}).status_code == 401
    assert live.client.post(url, json={"a": 1}, headers={"X-API-Key": keyed["api_key"]}).status_code == 200
    rules = {
        "ratio": _rule(live, condition="error_ratio", threshold=0.5, count="rejected", source_id=keyed["name"]),
        "ratio_high": _rule(live, condition="error_ratio", threshold=0.8, source_id=keyed["id"]),
        "failed_only": _rule(live, condition="error_ratio", threshold=0.1, count="failed", source_id=keyed["id"]),
        "lag": _rule(live, condition="processing_lag", seconds=0.3),
        "ready": _rule(live, condition="not_ready"),
        "relay": _rule(live, condition="relay_silent", minutes=0.01),
    }
    assert rules["ratio"]["source_id"] == keyed["id"]  # a name is stored as the id
    time.sleep(0.8)

    async def run(store: Any, ev: AlertEvaluator) -> list[Transition]:
        await store.start()
        try:
            return await ev.run_once()
        finally:
            await ev.http.aclose()
            await store.close()

    first = asyncio.run(run(*_second_process(live, ready_max_lag_seconds=0.3)))
    opened = {t.alert.rule_id: t.alert for t in first if t.kind == "open"}
    names = {k for k, r in rules.items() if r["id"] in opened}
    assert names == {"ratio", "lag", "ready", "relay"}, names
    assert opened[rules["ratio"]["id"]].detail["ratio"] == 0.75
    assert opened[rules["ready"]["id"]].detail["reason"] == "processing_lag"
    assert opened[rules["relay"]["id"]].subject == relay["id"]

    # the agent pulls: its silence alert resolves; the others stay open without a repeat (1 h)
    r = live.client.get("/api/v1/relay/messages", params={"wait": 0}, headers={"Authorization": f"Bearer {agent_tok}"})
    assert r.status_code == 200
    second = asyncio.run(run(*_second_process(live, ready_max_lag_seconds=0.3)))
    assert [(t.kind, t.alert.rule_id) for t in second] == [("resolve", rules["relay"]["id"])]
    states = {a["rule_id"]: a["state"] for a in _alerts(live)}
    assert states[rules["relay"]["id"]] == "resolved" and states[rules["lag"]["id"]] == "open"
    assert len(_alerts(live)) == 4


def test_one_evaluator_at_a_time(db_url: str, tmp_path: Path) -> None:
    """Two worker processes: the lease lets only one evaluate, so an alert never opens twice."""
    async def main() -> None:
        s = make_settings(db_url, tmp_path, alert_interval_seconds=5)
        a, b = open_store(s), open_store(s)
        a.migrate()
        await a.start()
        await b.start()
        try:
            ea, eb = AlertEvaluator(a, s, http=httpx.AsyncClient()), AlertEvaluator(b, s, http=httpx.AsyncClient())
            await AlertStore(a).create_rule(None, "lag", True, {"condition": "processing_lag", "seconds": 1e9})
            assert await AlertStore(a).take_lease(ea.holder, 5)
            assert not await AlertStore(b).take_lease(eb.holder, 5)
            assert await AlertStore(a).take_lease(ea.holder, 5)  # the holder renews
            assert await eb.run_once() == []
            await ea.http.aclose()
            await eb.http.aclose()
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_cli_rules_from_yaml_and_a_separate_worker_process(db_url: str, live_server_factory,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    """`hookbay alerts apply` sets rules from YAML; a `hookbay worker` process (the server runs no
    worker) evaluates them; `hookbay alerts` lists what it opened."""
    live = live_server_factory(db_url, run_worker=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOOKBAY_DATA_DIR=str(tmp_path), HOOKBAY_DATABASE_URL=db_url,
               HOOKBAY_ADMIN_TOKEN=ADMIN_TOKEN, HOOKBAY_LOG_LEVEL="warning", HOOKBAY_ALERT_INTERVAL_SECONDS="0.2")

    def hb(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True,
                           timeout=60)
        assert (p.returncode == 0) == ok, p.stderr + p.stdout
        return p

    hook = Receiver().start()
    rules = tmp_path / "alerts.yaml"
    rules.write_text(f"""\
rules:
  - name: acme quiet
    client_id: acme
    condition: silence
    minutes: 0.005
    allow_private_destinations: true
    channels:
      - type: webhook
        url: {hook.url}/a
        secret: {SECRET}
""")
    worker = None
    try:
        src = live.create_source(client_id="acme", name="Shop")
        assert "created" in hb("alerts", "apply", str(rules)).stdout
        assert "unchanged" in hb("alerts", "apply", str(rules)).stdout  # idempotent
        [r] = orjson.loads(hb("alerts", "rules", "--json").stdout)
        assert r["name"] == "acme quiet" and r["client_id"] == "acme" and r["condition"] == "silence"
        bad = tmp_path / "bad.yaml"
        bad.write_text("- name: x\n  condition: error_ratio\n")
        assert "threshold" in hb("alerts", "apply", str(bad), ok=False).stderr
        assert "no alerts" in hb("alerts").stdout

        worker = subprocess.Popen([sys.executable, "-m", "hookbay", "worker"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        got = _until(lambda: list(hook.received), timeout=30, what="the worker's webhook")
        payload = Webhook(SECRET).verify(got[0].body, got[0].headers)
        assert payload["type"] == "hookbay.alert.opened" and payload["alert"]["subject"] == src["id"]
        [a] = orjson.loads(hb("alerts", "--json", "--state", "open").stdout)
        assert a["id"] == payload["alert"]["id"] and a["client_id"] == "acme"
        assert "Shop" in hb("alerts").stdout
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=20)
        hook.stop()
