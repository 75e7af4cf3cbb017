"""The console's Alerts, Audit, Profiles and Tokens (relay tokens) pages in Chromium, on SQLite and
PostgreSQL, through the operations layer."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.integration import test_console
from tests.integration.test_console import Page, _api
from tests.integration.test_console_requests import screenshots

browser = test_console.browser
ui = test_console.ui


def _alert(live: Any, rule: dict[str, Any], alert_id: str, subject: str, state: str = "open") -> None:
    """An alert of ``rule`` stored as the evaluator does (from a second store, like a worker)."""
    from hookbay.store import open_store
    from hookbay.store.alerts import AlertStore, Transition

    async def go() -> None:
        store = open_store(live.settings)
        await store.start()
        try:
            row = {"id": alert_id, "rule_id": rule["id"], "client_id": rule["client_id"], "subject": subject,
                   "summary": f"{rule['name']} fired", "detail": {}, "opened_at": 1_700_000_000_000_000,
                   "notified_at": 1_700_000_000_000_000}
            await AlertStore(store).apply([Transition("open", row)])
            if state == "resolved":
                await AlertStore(store).apply([Transition("resolve", {
                    **row, "resolved_at": 1_700_000_100_000_000, "notified_at": 1_700_000_100_000_000, "notifications": 2})])
        finally:
            await store.close()

    t = threading.Thread(target=asyncio.run, args=(go(),))  # Playwright's sync API owns this thread's loop
    t.start()
    t.join()


def test_alerts_page_lists_open_and_resolved_alerts_with_their_rules(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Checkout", "client_id": "acme"})
    quiet = _api(live, "POST", "/api/v1/alert-rules", json={
        "name": "checkout quiet", "client_id": "acme", "condition": "silence", "minutes": 30, "source_id": src["id"],
        "channels": [{"type": "webhook", "url": "https://hooks.example.com/alerts"},
                     {"type": "email", "to": "ops@example.com"}]})
    errors = _api(live, "POST", "/api/v1/alert-rules", json={
        "name": "too many errors", "condition": "error_ratio", "threshold": 0.2,
        "channels": [{"type": "slack", "url": "https://hooks.slack.com/services/T000/B000/SECRETPART"}]})
    _alert(live, quiet, "alt_quiet", src["id"])
    _alert(live, errors, "alt_errors", "system", state="resolved")

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/alerts")
    rows = page.locator("#alerts tbody tr")
    expect(rows).to_have_count(2)
    open_row = page.locator('#alerts tr[data-id="alt_quiet"]')
    expect(open_row).to_contain_text("open")
    expect(open_row).to_contain_text("checkout quiet")
    expect(open_row.get_by_role("link", name="Checkout", exact=True)).to_have_attribute("href", f"/ui/sources/{src['id']}")
    expect(page.locator('#alerts tr[data-id="alt_errors"]')).to_contain_text("resolved")
    rules = page.locator("#rules")
    expect(rules).to_contain_text("webhook hooks.example.com")
    expect(rules).to_contain_text("email ops@example.com")
    expect(rules).to_contain_text("slack hooks.slack.com")
    expect(rules).to_contain_text("every client")
    expect(rules).to_contain_text("threshold 0.2")
    html = page.content()
    assert "SECRETPART" not in html and "whsec_" not in html  # no channel secret on the page
    screenshots(page, "alerts")

    page.select_option("#alert-state", "open")
    expect(page).to_have_url(re.compile(r"state=open"))
    expect(rows).to_have_count(1)
    page.goto("/ui/alerts")
    page.click("#rules >> text=too many errors")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("server")


def test_audit_page_shows_who_changed_what_and_filters(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Audited", "client_id": "acme",
                                                      "config": {"signature": {"scheme": "github"}},
                                                      "secret": "s3cret-value-1"})
    _api(live, "PATCH", f"/api/v1/sources/{src['id']}", json={"name": "Audited 2", "config": {"signature": None}})
    tok = _api(live, "POST", "/api/v1/tokens", json={"name": "ops", "client_id": "acme"})

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/audit")
    rows = page.locator("#audit tbody tr")
    expect(rows.first).to_contain_text("token.create")
    upd = page.locator("#audit tr", has_text="source.patch")
    expect(upd).to_contain_text('"Audited" -> "Audited 2"')
    expect(upd).to_contain_text("weakens")
    expect(upd).to_contain_text("admin")
    assert "s3cret-value-1" not in page.content() and tok["token"] not in page.content()
    screenshots(page, "audit")

    page.fill("#audit-action", "source.")
    page.click("#audit-apply")
    expect(page).to_have_url(re.compile(r"action=source\."))
    expect(rows).to_have_count(2)
    page.goto(f"/ui/audit?target={src['id']}&action=source.patch")
    expect(rows).to_have_count(1)
    page.goto("/ui/audit?actor=client%3Anobody")
    expect(page.locator("#empty")).to_contain_text("No entry matches")

    # a client token sees its own client's entries only
    other = _api(live, "POST", "/api/v1/sources", json={"name": "Theirs", "client_id": "globex"})
    ui.page.goto("/ui/audit")
    expect(page.locator(f'#audit a[href="/ui/sources/{other["id"]}"]')).to_have_count(1)
    with httpx.Client(base_url=live.url) as c:
        from tests.integration.test_tenants import _login

        _login(c, tok["token"])
        mine = c.get("/ui/audit").text
        assert src["id"] in mine and other["id"] not in mine
