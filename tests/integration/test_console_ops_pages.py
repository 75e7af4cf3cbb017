"""The console's Alerts, Audit, Profiles and Tokens (relay tokens) pages in Chromium, on SQLite and
PostgreSQL, through the operations layer."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.integration import test_console
from tests.integration.test_console import Page, _api
from tests.integration.test_console_requests import screenshots

browser = test_console.browser
ui = test_console.ui


def _alert(live: Any, rule: dict[str, Any], alert_id: str, subject: str, state: str = "open") -> None:
    """An alert of ``rule`` stored as the evaluator does (from a second store, like a worker)."""
    from dataclasses import replace

    from hookbay.store import open_store
    from hookbay.store.alert_rows import StoredAlert
    from hookbay.store.alerts import AlertStore, Transition

    async def go() -> None:
        store = open_store(live.settings)
        await store.start()
        try:
            row = StoredAlert(id=alert_id, rule_id=rule["id"], client_id=rule["client_id"], subject=subject,
                              state="open", summary=f"{rule['name']} fired", detail={},
                              opened_at=1_700_000_000_000_000, resolved_at=None,
                              notified_at=1_700_000_000_000_000, notifications=1)
            await AlertStore(store).apply([Transition("open", row)])
            if state == "resolved":
                await AlertStore(store).apply([Transition("resolve", replace(
                    row, resolved_at=1_700_000_100_000_000, notified_at=1_700_000_100_000_000, notifications=2))])
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


def test_profiles_search_provenance_merges_export_and_erase(live: Any, ui: Page) -> None:
    import json

    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Signup", "client_id": "acme",
                                                      "config": {"parser": "contact", "default_region": "GB"}})

    def send(**fields: str) -> dict[str, Any]:
        r = httpx.post(src["ingest_url"] + "?wait=1", json={"SourceName": "Web", "SourceType": "Form", **fields})
        assert r.status_code == 200, r.text
        return dict(r.json())

    by_email = send(Email="ada@example.com", FirstName="Ada", EmailPermission="true")
    by_phone = send(Mobile="+447700900123", LastName="Lovelace")
    joined = send(Email="ada@example.com", Mobile="+447700900123")  # both keys: the two profiles merge
    send(Email="grace@example.com", FirstName="Grace", LastName="Hopper")
    pids = {r["receipt"]["records"][0]["profile_id"] for r in (by_email, by_phone)}
    assert len(pids) == 2
    survivor = _api(live, "GET", "/api/v1/profiles", params={"email": "ada@example.com"})[0]["id"]
    merged = (pids - {survivor}).pop()

    ui.login(ADMIN_TOKEN)
    page = ui.page
    rows = page.locator("#profiles tbody tr")
    for q, kind in (("ada", "name"), ("ADA lovelace", "name"), ("Ada@Example.com", "email"),
                    ("+44 7700 900123", "phone")):
        page.goto("/ui/profiles?" + urlencode({"q": q}))
        expect(page.locator("#search-kind")).to_contain_text(f"Searched by {kind}")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(survivor)
    page.goto("/ui/profiles?q=Hopp")
    expect(rows.first).not_to_contain_text(survivor)
    page.goto("/ui/profiles?q=Babbage")
    expect(rows.first).to_contain_text("No profile has a first or last name starting with that")
    page.goto("/ui/profiles?q=ada")
    screenshots(page, "profiles-search")

    page.click(f"#profiles a:text('{survivor}')")
    fields = page.locator("#fields")
    first = fields.locator("tr", has_text="first_name")
    expect(first).to_contain_text("Ada")
    expect(first.get_by_role("link", name=by_email["request_id"])).to_have_attribute(
        "href", f"/ui/requests/{by_email['request_id']}")
    expect(first.get_by_role("link", name="Signup")).to_have_attribute("href", f"/ui/sources/{src['id']}")
    expect(fields.locator("tr", has_text="last_name")).to_contain_text(by_phone["request_id"])
    expect(page.locator("#merged-from")).to_contain_text(merged)
    expect(page.locator("#ledger")).to_contain_text("email")
    records = page.locator("#records tbody tr")
    expect(records).to_have_count(3)
    expect(page.locator("#records")).to_contain_text(joined["request_id"])
    screenshots(page, "profile")
    page.goto(f"/ui/profiles/{merged}")  # the merged-away id still leads here
    expect(page.locator("#merged-notice")).to_contain_text(merged)

    href = page.locator("#export").get_attribute("href")
    assert href == f"/ui/profiles/{survivor}/export"
    resp = page.request.get(href)  # the browser's session: the file the link downloads
    assert resp.status == 200 and resp.headers["content-disposition"] == f'attachment; filename="{survivor}.json"'
    exported = json.loads(resp.body())
    assert exported["profile"]["id"] == survivor and exported["profile"]["email"] == "ada@example.com"
    assert {r["request_id"] for r in exported["records"]} >= {by_email["request_id"], joined["request_id"]}

    page.click("#erase")
    expect(page.locator("#erase-warning")).to_contain_text("cannot be undone")
    screenshots(page, "profile-erase")
    page.fill("#erase-confirm", "prf_not_this_one")
    page.click("#erase-submit")
    expect(page.locator("#error")).to_contain_text("Type the profile's id")
    assert live.client.get(f"/api/v1/profiles/{survivor}", headers=test_console.ADMIN).status_code == 200
    page.fill("#erase-confirm", survivor)
    page.click("#erase-submit")
    expect(page.locator("#erased")).to_contain_text("Profile erased")
    expect(page.locator("#erase-summary")).to_contain_text("records deleted")
    assert live.client.get(f"/api/v1/profiles/{survivor}", headers=test_console.ADMIN).status_code == 404
    body = live.client.get(f"/api/v1/requests/{by_email['request_id']}", headers=test_console.ADMIN).json()
    assert "ada@example.com" not in str(body)
    page.goto("/ui/profiles?q=grace%40example.com")
    expect(rows).to_have_count(1)  # another customer's profile stays


def test_tokens_page_creates_shows_once_and_revokes_relay_tokens(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    relayed = _api(live, "POST", "/api/v1/sources", json={"name": "Behind firewall", "client_id": "acme",
                                                          "config": {"relay": True}})
    _api(live, "POST", "/api/v1/sources", json={"name": "Direct", "client_id": "acme"})
    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/tokens")
    expect(page.locator("#relay-empty")).to_be_visible()
    expect(page.locator("#relay-source option")).to_have_count(1)  # only sources with relay on
    page.fill("#relay-name", "dc-agent")
    page.click("#relay-create")
    token = page.locator("#new-relay-token").input_value()
    assert token.startswith("hbr_")
    row = page.locator("#relay-tokens tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("dc-agent")
    expect(row.get_by_role("link", name="Behind firewall")).to_have_attribute("href", f"/ui/sources/{relayed['id']}")
    screenshots(page, "tokens-relay")
    agent = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{live.url}/api/v1/relay/messages", headers=agent, params={"wait": 0}).status_code == 200
    listed = _api(live, "GET", f"/api/v1/sources/{relayed['id']}/relay-tokens")
    assert [t["name"] for t in listed] == ["dc-agent"]
    page.reload()  # shown once
    expect(page.locator("#new-relay-token")).to_have_count(0)
    assert token not in page.content()

    row.locator("button.revoke").click()  # the confirmation is accepted
    expect(page.locator("#notice")).to_contain_text("Relay token revoked")
    expect(page.locator("#relay-tokens tbody tr")).to_have_count(0)
    assert httpx.get(f"{live.url}/api/v1/relay/messages", headers=agent, params={"wait": 0}).status_code == 401
    assert _api(live, "GET", f"/api/v1/sources/{relayed['id']}/relay-tokens") == []
    entries = _api(live, "GET", "/api/v1/audit")["items"]
    assert [e["action"] for e in entries[:2]] == ["relay_token.revoke", "relay_token.create"]
