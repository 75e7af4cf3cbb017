"""Bulk actions from the console, on SQLite and PostgreSQL in Chromium: the Requests page's filter
replayed or redelivered as a whole and the Deliveries page's filter retried, each with the count
shown before anything runs, progress chunk by chunk (the chunk is made small here so a run takes
several), and the result; requests arriving after the confirmation are left out."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.integration import test_console, test_console_rerun
from tests.integration.test_console import CONTACT, Page, _api
from tests.integration.test_console_requests import screenshots

browser = test_console.browser
ui = test_console.ui
receiver = test_console_rerun.receiver  # a loopback endpoint answering 202
REFUSED = "http://127.0.0.1:9/hook"  # loopback: refused by the outbound-address guard, a dead letter at once


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from hookbay.ops import bulk

    monkeypatch.setattr(bulk, "CHUNK", 2)


def _deliveries(live: Any, src: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_api(live, "GET", "/api/v1/deliveries", params={"source": src["id"], "limit": 100})["items"])


def _wait(what: Any, why: str) -> None:
    deadline = time.monotonic() + 20
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.1)


def _attempts(live: Any, dlv: dict[str, Any]) -> int:
    return len(_api(live, "GET", f"/api/v1/deliveries/{dlv['id']}")["attempt_log"])


def test_bulk_replay_of_the_filtered_requests(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    shop = _api(live, "POST", "/api/v1/sources", json={"name": "Shop", "client_id": "acme"})
    other = _api(live, "POST", "/api/v1/sources", json={"name": "Other", "client_id": "acme"})
    rids = [httpx.post(shop["ingest_url"] + "?wait=1", json={**CONTACT, "n": i}).json()["request_id"]
            for i in range(5)]
    other_rid = httpx.post(other["ingest_url"] + "?wait=1", json=CONTACT).json()["request_id"]
    for s in (shop, other):
        _api(live, "PATCH", f"/api/v1/sources/{s['id']}", json={"config": {"parser": "contact"}})

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/?source={shop['id']}")
    page.click("#bulk-replay")
    expect(page.locator("#bulk-count")).to_contain_text("5 requests match")
    expect(page.locator("#bulk-filters")).to_contain_text(f"source={shop['id']}")
    screenshots(page, "bulk-confirm")
    for r in rids:  # nothing ran before the confirmation
        assert "fields" in _api(live, "GET", f"/api/v1/requests/{r}")["records"][0]
    httpx.post(shop["ingest_url"] + "?wait=1", json=CONTACT)  # after the confirmation page: not in the run
    page.click("#bulk-confirm")
    expect(page.locator("#bulk-result")).to_contain_text("Replayed 5 of 5 request(s): 5 changed, 0 skipped")
    screenshots(page, "bulk-result")
    for r in rids:
        assert "contact" in _api(live, "GET", f"/api/v1/requests/{r}")["records"][0]
    assert "fields" in _api(live, "GET", f"/api/v1/requests/{other_rid}")["records"][0]  # another source's
    page.click("#bulk-back")
    assert f"source={shop['id']}" in page.url

    # a filter nothing matches says so, and offers no button
    page.goto(f"/ui/bulk/requests?action=replay&source={shop['id']}&verdict=rejected")
    expect(page.locator("#bulk-count")).to_contain_text("Nothing matches")
    expect(page.locator("#bulk-confirm")).to_have_count(0)


def test_bulk_redeliver_and_retry_all_matching_deliveries(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    fwd = _api(live, "POST", "/api/v1/sources", json={"name": "Fwd", "client_id": "acme", "config": {
        "actions": [{"type": "forward", "name": "out", "url": REFUSED}]}})
    keep = _api(live, "POST", "/api/v1/sources", json={"name": "Keep", "client_id": "acme", "config": {
        "actions": [{"type": "forward", "name": "out", "url": REFUSED}]}})
    for i in range(3):
        httpx.post(fwd["ingest_url"], json={"n": i})
    httpx.post(keep["ingest_url"], json={"n": 9})
    _wait(lambda: [d["state"] for d in _deliveries(live, fwd)] == ["dead"] * 3
          and [d["state"] for d in _deliveries(live, keep)] == ["dead"], "no dead letters")
    kept = _deliveries(live, keep)[0]

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/?source={fwd['id']}")
    page.click("#bulk-redeliver")
    expect(page.locator("#bulk-count")).to_contain_text("3 requests match")
    page.click("#bulk-confirm")
    expect(page.locator("#bulk-result")).to_contain_text("3 delivery(ies) of 3 request(s) queued to run again")
    _wait(lambda: all(_attempts(live, d) == 2 and d["state"] == "dead" for d in _deliveries(live, fwd)),
          "the re-run actions did not run")

    page.goto(f"/ui/deliveries?source={fwd['id']}&error=public")
    page.click("#retry-all")
    expect(page.locator("#bulk-count")).to_contain_text("3 deliveries match")
    screenshots(page, "bulk-deliveries-confirm")
    page.click("#bulk-confirm")
    expect(page.locator("#bulk-result")).to_contain_text("3 of 3 delivery(ies) queued to run again")
    _wait(lambda: all(_attempts(live, d) == 3 and d["state"] == "dead" for d in _deliveries(live, fwd)),
          "the retried deliveries did not run")
    assert _attempts(live, kept) == 1  # another source's dead letter: left alone

    # succeeded or queued ones are never picked by the default (dead letters) filter
    page.goto(f"/ui/bulk/deliveries?source={fwd['id']}&state=pending")
    expect(page.locator("#bulk-count")).to_contain_text("Nothing matches")


def test_delivery_page_shows_what_each_attempt_sends_and_gets_back(live: Any, ui: Page, receiver: str) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Fwd", "client_id": "acme", "config": {
        "allow_private_destinations": True, "actions": [{"type": "forward", "name": "crm", "url": receiver}]}})
    httpx.post(src["ingest_url"], json={"order": "A-17"})
    _wait(lambda: [d["state"] for d in _deliveries(live, src)] == ["succeeded"], "not delivered")
    dlv = _deliveries(live, src)[0]
    _api(live, "POST", f"/api/v1/deliveries/{dlv['id']}/retry")
    _wait(lambda: _attempts(live, dlv) == 2, "not delivered again")

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/deliveries/{dlv['id']}")
    expect(page.locator("#dlv-record")).to_contain_text('"A-17"')
    rows = page.locator("#attempts tbody tr")
    expect(rows).to_have_count(2)
    for i in range(2):
        expect(rows.nth(i)).to_contain_text("202")
        rows.nth(i).locator("summary").click()
        expect(rows.nth(i).locator("pre.excerpt")).to_have_text("queued by the receiver")
    screenshots(page, "delivery-attempts")
