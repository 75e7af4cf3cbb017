"""Fixing one request from the console, on SQLite and PostgreSQL: Replay shows the dry-run diff and
changes nothing until applied (and refuses to apply a preview that no longer holds); Re-run
actions lists the deliveries that will run again and queues exactly those once confirmed, never
another request's or another client's; Resend sends the stored request to a typed URL through the
outbound-address guard."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.integration import test_console
from tests.integration.test_console import CONTACT, Page, _api
from tests.integration.test_console_requests import screenshots
from tests.integration.test_tenants import _login

browser = test_console.browser  # the same fixtures as the console tests
ui = test_console.ui

REFUSED = "http://127.0.0.1:9/hook"  # loopback: refused by the outbound-address guard, a dead letter at once


def _records(live: Any, rid: str) -> list[dict[str, Any]]:
    return list(_api(live, "GET", f"/api/v1/requests/{rid}")["records"])


def _dead_letters(live: Any, rid: str, n: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        items = _api(live, "GET", "/api/v1/deliveries", params={"request_id": rid})["items"]
        if len(items) == n and all(d["state"] == "dead" for d in items):
            return list(items)
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


def test_replay_shows_the_dry_run_diff_then_applies_only_what_was_shown(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Signups", "client_id": "acme"})
    rid = httpx.post(src["ingest_url"] + "?wait=1", json=CONTACT).json()["request_id"]
    assert "fields" in _records(live, rid)[0]
    _api(live, "PATCH", f"/api/v1/sources/{src['id']}", json={"config": {"parser": "contact"}})

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/requests/{rid}")
    page.click("#replay")
    preview = page.locator("#replay-preview")
    expect(preview).to_contain_text("Dry run (nothing changed yet): processed → processed, 1 record(s)")
    expect(preview).to_contain_text("the records would change")
    expect(page.locator("#replay-diff .d-add").first).to_be_visible()
    expect(page.locator("#replay-diff")).to_contain_text('"contact"')
    screenshots(page, "request-replay-preview")
    assert "fields" in _records(live, rid)[0]  # the dry run changed nothing
    expect(page.locator("#records")).to_contain_text('"fields"')

    page.click("#replay-apply")
    expect(page.locator("#replay-result")).to_contain_text("Replayed: processed → processed, 1 record(s)")
    expect(page.locator("#replay-preview")).to_have_count(0)
    expect(page.locator("#records")).to_contain_text('"contact"')
    assert _records(live, rid)[0]["contact"]["first_name"] == "Ada"

    # a preview that no longer holds (the parser changed after it was shown) is not applied
    page.click("#replay")
    expect(page.locator("#replay-preview")).to_contain_text("the records would stay the same")
    _api(live, "PATCH", f"/api/v1/sources/{src['id']}", json={"config": {"parser": "generic"}})
    page.click("#replay-apply")
    expect(page.locator("#replay-stale")).to_contain_text("Not applied")
    expect(page.locator("#replay-preview")).to_contain_text("the records would change")
    assert "contact" in _records(live, rid)[0]
    page.click("#replay-apply")  # the new preview, reviewed: applied
    expect(page.locator("#replay-result")).to_contain_text("Replayed")
    assert "fields" in _records(live, rid)[0]

    # Cancel leaves everything as it was
    page.click("#replay")
    page.click("#replay-cancel")
    expect(page.locator("#replay-preview")).to_have_count(0)
    expect(page.locator("#replay")).to_be_visible()


def test_rerun_actions_lists_the_deliveries_and_runs_them_once_confirmed(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Signups", "client_id": "acme", "config": {
        "parser": "contact", "actions": [{"type": "forward", "name": "crm", "url": REFUSED}]}})
    rid = httpx.post(src["ingest_url"] + "?wait=1", json=CONTACT).json()["request_id"]
    [dead] = _dead_letters(live, rid)
    quiet = _api(live, "POST", "/api/v1/sources", json={"name": "Quiet", "client_id": "acme"})
    no_actions = httpx.post(quiet["ingest_url"] + "?wait=1", json=CONTACT).json()["request_id"]

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/requests/{rid}")
    page.click("#redeliver")
    expect(page.locator("#redeliver-count")).to_contain_text("1 delivery will run again now")
    row = page.locator(f'#redeliver-list tr[data-id="{dead["id"]}"]')
    expect(row).to_contain_text("crm")
    expect(row).to_contain_text("127.0.0.1")
    expect(row.locator(".b-dead")).to_be_visible()
    screenshots(page, "request-redeliver")
    page.click("#redeliver-cancel")
    expect(page.locator("#request-deliveries")).to_be_visible()
    assert _api(live, "GET", f"/api/v1/deliveries/{dead['id']}")["attempts"] == 1  # cancelled: not queued

    page.click("#redeliver")
    page.click("#redeliver-confirm")
    expect(page.locator("#notice")).to_contain_text("1 delivery queued to run again now.")
    deadline = time.monotonic() + 15
    while len((d := _api(live, "GET", f"/api/v1/deliveries/{dead['id']}"))["attempt_log"]) < 2 \
            or d["state"] != "dead":  # it ran again, through the guard again, and was refused again
        assert time.monotonic() < deadline, d
        time.sleep(0.1)
    assert "not a public address" in d["attempt_log"][1]["error"]

    # a request without deliveries has no Re-run link, and its confirmation page says why
    page.goto(f"/ui/requests/{no_actions}")
    expect(page.locator("#redeliver")).to_have_count(0)
    page.goto(f"/ui/requests/{no_actions}/redeliver")
    expect(page.locator("#redeliver-count")).to_contain_text("this request caused no deliveries")
    expect(page.locator("#redeliver-confirm")).to_have_count(0)


def test_redeliver_queues_only_confirmed_deliveries_of_that_request_and_client(live: Any) -> None:
    """Ids are checked against the request in the URL and the session's client: another request's
    or another client's delivery named in the form is never queued."""
    actions = {"parser": "contact", "actions": [{"type": "forward", "name": "crm", "url": REFUSED}]}
    mine = _api(live, "POST", "/api/v1/sources", json={"name": "Mine", "client_id": "acme", "config": actions})
    theirs = _api(live, "POST", "/api/v1/sources", json={"name": "Theirs", "client_id": "globex", "config": actions})
    a = httpx.post(mine["ingest_url"] + "?wait=1", json=CONTACT).json()["request_id"]
    b = httpx.post(mine["ingest_url"] + "?wait=1", json=CONTACT).json()["request_id"]
    g = httpx.post(theirs["ingest_url"] + "?wait=1", json=CONTACT).json()["request_id"]
    [da], [db], [dg] = _dead_letters(live, a), _dead_letters(live, b), _dead_letters(live, g)
    tok = _api(live, "POST", "/api/v1/tokens", json={"name": "acme", "client_id": "acme"})["token"]

    with httpx.Client(base_url=live.url) as c:
        csrf = _login(c, tok)
        r = c.post(f"/ui/requests/{a}/redeliver", data={"csrf": csrf, "ids": f"{db['id']},{dg['id']}"})
        assert r.status_code == 303 and r.headers["location"].endswith("?redelivered=0")
        for d in (da, db, dg):
            now = _api(live, "GET", f"/api/v1/deliveries/{d['id']}")
            assert (now["state"], now["attempts"]) == ("dead", 1), now

        assert c.post(f"/ui/requests/{a}/redeliver", data={"csrf": csrf, "ids": ""}).status_code == 400
        assert c.post(f"/ui/requests/{a}/redeliver", data={"ids": da["id"]}).status_code == 403  # no CSRF token
        assert c.get(f"/ui/requests/{g}/redeliver").status_code == 404

        r = c.post(f"/ui/requests/{a}/redeliver", data={"csrf": csrf, "ids": da["id"]})
        assert r.status_code == 303 and r.headers["location"].endswith("?redelivered=1")
        queued = _api(live, "GET", f"/api/v1/deliveries/{da['id']}")
        assert queued["state"] in ("pending", "running") or len(queued["attempt_log"]) == 2, queued
        for d in (db, dg):
            assert _api(live, "GET", f"/api/v1/deliveries/{d['id']}")["attempts"] == 1


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A loopback endpoint that records what it got and answers 202 with a short text."""

    got: list[tuple[str, str, dict[str, str], bytes]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.got.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(202)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"queued by the receiver")

    do_POST = do_PUT

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.got = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/in"
    srv.shutdown()
    srv.server_close()


def test_resend_sends_the_exact_request_through_the_address_guard(live: Any, ui: Page, receiver: str) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Signups", "client_id": "acme",
                                                      "config": {"methods": ["PUT"]}})
    body = b'{"Email": "resend@example.com", "n": 1}'
    rid = httpx.put(src["ingest_url"] + "?wait=1", content=body,
                    headers={"Content-Type": "application/json", "X-Shop": "north", "Cookie": "sid=1"}).json()["request_id"]

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/requests/{rid}")
    page.fill("#resend-url", receiver)
    page.click("#resend")  # loopback, and the private network not allowed: refused before connecting
    expect(page.locator("#resend-result")).to_contain_text("Destination refused")
    expect(page.locator("#resend-result")).to_contain_text("not a public address")
    assert _Receiver.got == []
    page.check("#resend-private")
    page.click("#resend")
    expect(page.locator("#resend-result")).to_contain_text("answered HTTP 202")
    expect(page.locator("#resend-excerpt")).to_have_text("queued by the receiver")
    screenshots(page, "request-resend")
    [(method, path, headers, got)] = _Receiver.got
    assert (method, path, got) == ("PUT", "/in", body)
    assert headers["content-type"] == "application/json" and headers["x-shop"] == "north"
    assert "cookie" not in headers

    # a client token: no private-network choice, and asking for it anyway is refused
    tok = _api(live, "POST", "/api/v1/tokens", json={"name": "acme", "client_id": "acme"})["token"]
    with httpx.Client(base_url=live.url) as c:
        csrf = _login(c, tok)
        page_html = c.get(f"/ui/requests/{rid}").text
        assert 'id="resend-url"' in page_html and 'id="resend-private"' not in page_html
        r = c.post(f"/ui/requests/{rid}/resend", data={"csrf": csrf, "url": receiver, "allow_private": "1"})
        assert r.status_code == 403
        r = c.post(f"/ui/requests/{rid}/resend", data={"csrf": csrf, "url": receiver})
        assert r.status_code == 200 and "not a public address" in r.text
        r = c.post(f"/ui/requests/{rid}/resend", data={"csrf": csrf, "url": "file:///etc/passwd"})
        assert r.status_code == 200 and "URL scheme must be http or https" in r.text
    assert len(_Receiver.got) == 1
