"""The console's Requests page in Chromium, on SQLite and PostgreSQL: free-text search over bodies
and headers, every filter carried in the URL, keyset paging, the live tail under a filter, the empty
states, and a screenshot at desktop and phone sizes (under HOOKBAY_TEST_ARTIFACTS, tmp/artifacts
by default)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.integration import test_console
from tests.integration.test_console import Page, _api

browser = test_console.browser  # the same fixtures as the console tests
ui = test_console.ui

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def screenshots(page: Any, name: str) -> None:
    """Save the page at both sizes; the run keeps them for a person to look at, nothing asserts pixels."""
    out = Path(os.environ.get("HOOKBAY_TEST_ARTIFACTS", "tmp/artifacts")) / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    db = "pg" if "postgresql" in os.environ.get("PYTEST_CURRENT_TEST", "") else "sqlite"
    for size, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        page.screenshot(path=str(out / f"{name}-{size}-{db}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def _query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_requests_search_filters_paging_and_live_tail(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Shop", "client_id": "acme"})
    other = _api(live, "POST", "/api/v1/sources", json={"name": "Other", "client_id": "acme"})
    url = src["ingest_url"]
    ids = {}
    ids["email"] = httpx.post(url, json={"customer": "Find-Me@Example.com"}).json()["request_id"]
    ids["header"] = httpx.post(url, json={"n": 1}, headers={"X-Order": "ORD-7781"}).json()["request_id"]
    assert httpx.get(url).status_code == 405  # rejected at ingest: rule "method"
    ids["other"] = httpx.post(other["ingest_url"], json={"customer": "find-me too"}).json()["request_id"]

    ui.login(ADMIN_TOKEN)
    page = ui.page
    rows = page.locator("#tail tbody tr")
    expect(rows).to_have_count(4)
    screenshots(page, "requests")

    # free text over the body, case ignored; typed into the form, carried in the URL
    page.fill("#filter-q", "find-me@example")
    page.press("#filter-q", "Enter")
    expect(page).to_have_url(re.compile(r"q=find-me%40example"))
    expect(rows).to_have_count(1)
    expect(page.locator(f'#tail tr[data-id="{ids["email"]}"]')).to_be_visible()
    # ... and over the headers; a source narrows it
    page.goto("/ui/?q=ord-77")
    expect(rows).to_have_count(1)
    expect(page.locator(f'#tail tr[data-id="{ids["header"]}"]')).to_be_visible()
    page.goto("/ui/?q=find-me")
    expect(rows).to_have_count(2)
    page.select_option("#filter-source", src["id"])
    expect(page).to_have_url(re.compile(rf"source={src['id']}"))
    assert _query(page)["q"] == ["find-me"]  # the other filters stay
    expect(rows).to_have_count(1)

    # rule and status: the rejected GET; a shared link opens the same view
    page.goto(f"/ui/?rule=method&status=405&source={src['id']}")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("method")
    expect(page.locator("#filter-rule")).to_have_value("method")
    page.goto("/ui/?status=abc")
    expect(page.locator(".filter-error")).to_contain_text("Status must be an HTTP status code")
    expect(rows).to_have_count(4)

    # time: a relative range keeps everything recent, an absolute window in the past has nothing
    page.select_option("#filter-range", "15m")
    expect(page).to_have_url(re.compile(r"range=15m"))
    expect(rows).to_have_count(4)
    page.goto("/ui/?since=2000-01-01T00:00&until=2000-01-02T00:00")
    expect(page.locator("#empty")).to_contain_text("No request matches these filters")
    expect(page.locator("#live-status")).to_have_text("paused")
    expect(page.locator("#filter-since")).to_have_value("2000-01-01T00:00")

    # the live tail follows new requests that match the filter, and only those
    page.goto("/ui/?q=tail-needle")
    expect(page.locator("#empty")).to_be_visible()
    page.evaluate("window.__not_reloaded = true")
    hit = httpx.post(url, json={"note": "a TAIL-NEEDLE here"}).json()["request_id"]
    miss = httpx.post(url, json={"note": "nothing to see"}).json()["request_id"]
    expect(page.locator(f'#tail tr[data-id="{hit}"]')).to_be_visible()
    expect(page.locator("#empty")).to_be_hidden()
    page.wait_for_timeout(1800)  # another poll has run
    expect(page.locator(f'#tail tr[data-id="{miss}"]')).to_have_count(0)
    assert page.evaluate("window.__not_reloaded") is True

    # paging: 50 a page, newest first, keyset cursors in the URL; older then newer comes back
    batch = [httpx.post(other["ingest_url"], json={"i": i}).json()["request_id"] for i in range(53)]
    page.goto(f"/ui/?source={other['id']}")
    expect(rows).to_have_count(50)
    first_page = [rows.nth(i).get_attribute("data-id") for i in range(50)]
    assert first_page == sorted([*batch, ids["other"]], reverse=True)[:50]
    page.click("#page-older")
    expect(page).to_have_url(re.compile(r"before=req_"))
    expect(rows).to_have_count(4)
    assert [rows.nth(i).get_attribute("data-id") for i in range(4)] == sorted([*batch, ids["other"]],
                                                                               reverse=True)[50:]
    expect(page.locator("#live-status")).to_have_text("paused")
    expect(page.locator("#page-older")).to_have_count(0)
    page.click("#page-newer")
    expect(page).to_have_url(re.compile(r"after=req_"))
    expect(rows).to_have_count(50)
    assert [rows.nth(i).get_attribute("data-id") for i in range(50)] == first_page
    assert _query(page)["source"] == [other["id"]]


def test_requests_empty_state_for_a_new_install(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    ui.login(ADMIN_TOKEN)
    expect(ui.page.locator("#empty")).to_contain_text("No requests yet")
    expect(ui.page.locator('#empty a[href="/ui/sources"]')).to_be_visible()
