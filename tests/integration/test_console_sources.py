"""The console's source editor and mapping editor in Chromium, on SQLite and PostgreSQL: a source
created with a signature scheme accepts a request signed by the provider's own library; editing
one setting leaves every other as it was; removing the signature check needs an explicit tick and
lands in the audit log as a weakening; a bad value is named at its field; rotation shows the new
value once; delete says what happens to the stored requests. The mapping editor previews a draft
against the stored requests and a pasted body without writing anything, saves it as the next
version, and replays the requests that failed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import standardwebhooks

from tests.conftest import ADMIN_TOKEN
from tests.integration import test_console
from tests.integration.test_console import Page, _api
from tests.integration.test_console_requests import screenshots

browser = test_console.browser  # the same fixtures as the console tests
ui = test_console.ui

BODY = b'{"email":"signed@example.com"}'


def _signed(secret: str, body: bytes = BODY) -> dict[str, str]:
    ts, msg_id = int(time.time()), f"msg_{time.monotonic_ns()}"  # a new id each: a repeated one is a duplicate
    sig = standardwebhooks.Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig,
            "Content-Type": "application/json"}


def _post(url: str, secret: str | None, **headers: str) -> httpx.Response:
    return httpx.post(url, content=BODY, headers={**(_signed(secret) if secret else {}), **headers})


def _config(live: Any, sid: str) -> dict[str, Any]:
    return dict(_api(live, "GET", f"/api/v1/sources/{sid}")["config"])


def test_source_settings_signature_weakening_rotation_snippets_and_delete(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    ui.login(ADMIN_TOKEN)
    page = ui.page
    # create with Standard Webhooks: the generated secret is shown once and signs a real request
    page.goto("/ui/sources")
    page.fill("#name", "Billing")
    page.fill("#client_id", "acme")
    page.select_option("#signature", "standard")
    page.click("#create")
    secret = page.locator("#new-secret").input_value()
    assert secret.startswith("whsec_")
    url = page.locator("#ingest-url").input_value()
    sid = page.locator("dl.facts code").first.inner_text()
    assert httpx.post(url, content=BODY, headers={"Content-Type": "application/json"}).status_code == 401
    signed = _post(url, secret)
    assert signed.status_code == 200, signed.text
    rid = signed.json()["request_id"]

    # snippets: curl, JavaScript and the HTML form name the URL; Copy copies the curl command
    expect(page.locator("#snippet-curl")).to_contain_text(url)
    page.click('button[data-copy="snippet-curl"]')
    assert url in page.evaluate("navigator.clipboard.readText()")
    expect(page.locator("#snippet-js")).to_contain_text(url)
    expect(page.locator("#snippet-form")).to_contain_text(url)
    screenshots(page, "source")

    # edit one field: the rate changes, nothing else does
    page.click("#edit-settings")
    expect(page.locator("#sig_scheme")).to_have_value("standard")
    screenshots(page, "source-settings")
    before = _config(live, sid)
    page.fill("#f-rate", "5")
    page.click("#save-settings")
    expect(page.locator("#notice")).to_have_text("Saved.")
    assert _config(live, sid) == {**before, "rate": 5.0}

    # a change made elsewhere meanwhile is kept: the form sends only what this user changed
    page.fill("#f-retention_days", "30")
    _api(live, "PATCH", f"/api/v1/sources/{sid}", json={"config": {"methods": ["POST", "PUT"]}})
    page.click("#save-settings")
    expect(page.locator("#notice")).to_have_text("Saved.")
    assert _config(live, sid) == {**before, "rate": 5.0, "retention_days": 30, "methods": ["POST", "PUT"]}

    # a bad value is named at its field, and nothing is saved
    page.fill("#f-allow_ips", "10.0.0.0/8\nnot-an-address")
    page.fill("#f-burst", "many")
    page.click("#save-settings")
    expect(page.locator("#err-allow_ips")).to_contain_text("not an IP address or CIDR: 'not-an-address'")
    expect(page.locator("#err-burst")).to_contain_text("a whole number")
    expect(page.locator("#f-allow_ips")).to_have_value("10.0.0.0/8\nnot-an-address")  # the input is kept
    screenshots(page, "source-settings-error")
    page.fill("#f-burst", "")
    page.click("#save-settings")
    expect(page.locator("#err-allow_ips")).to_contain_text("not an IP address")
    expect(page.locator("#err-burst")).to_have_count(0)
    assert _config(live, sid)["allow_ips"] == [] and _config(live, sid)["burst"] is None
    page.goto(f"/ui/sources/{sid}/settings")

    # rotate the signing secret (retire the old one now): the new one is shown once and works at once
    page.goto(f"/ui/sources/{sid}")
    page.select_option('select[name="grace_seconds"]', "0")
    page.click("#rotate")
    new_secret = page.locator("#new-secret").input_value()
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert _post(url, secret).status_code == 401
    assert _post(url, new_secret).status_code == 200
    # require an API key: shown once, needed from now on
    page.click("#rotate-api-key")
    key = page.locator("#new-api-key").input_value()
    assert key.startswith("hbk_")
    assert _post(url, new_secret).status_code == 401
    assert _post(url, new_secret, **{"X-API-Key": key}).status_code == 200
    page.reload()
    expect(page.locator("#new-api-key")).to_have_count(0)

    # removing the signature check is refused until ticked, then audited as a weakening
    page.goto(f"/ui/sources/{sid}/settings")
    page.select_option("#sig_scheme", "")
    page.click("#save-settings")
    expect(page.locator("#err-signature")).to_contain_text("signature check removed")
    expect(page.locator("#weakened")).to_be_visible()
    assert _config(live, sid)["signature"]["scheme"] == "standard"
    page.check("#confirm-weaken")
    page.click("#save-settings")
    expect(page.locator("#notice")).to_have_text("Saved.")
    assert _config(live, sid)["signature"] is None
    entry = _api(live, "GET", "/api/v1/audit", params={"limit": 10})["items"][0]
    assert entry["action"] == "source.patch" and entry["target"] == sid
    assert "signature: signature check removed" in entry["weakens"], entry
    assert "signature: [removed]" in entry["changes"] or any("signature" in c for c in entry["changes"]), entry
    deadline = time.monotonic() + 5
    while _post(url, None, **{"X-API-Key": key}).status_code != 200:  # unsigned is accepted now
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # choosing a scheme again generates its secret, shown once
    page.select_option("#sig_scheme", "standard")
    page.click("#save-settings")
    again = page.locator("#new-secret").input_value()
    assert again.startswith("whsec_")
    assert _post(url, again, **{"X-API-Key": key}).status_code == 200

    # delete: the confirmation says what happens to its requests; the name must be typed
    n = _api(live, "GET", "/api/v1/requests", params={"source": sid, "limit": 100})["items"]
    page.goto(f"/ui/sources/{sid}")
    page.click("#delete")
    expect(page.locator("#delete-requests")).to_contain_text(f"its {len(n)} stored request(s) stay in the request log")
    screenshots(page, "source-delete")
    page.fill("#confirm-name", "Billin")
    page.click("#delete-confirm")
    expect(page.locator("#error")).to_contain_text("Type the source's name exactly")
    assert live.client.get(f"/api/v1/sources/{sid}", headers=test_console.ADMIN).status_code == 200
    page.fill("#confirm-name", "Billing")
    page.click("#delete-confirm")
    expect(page.locator("#notice")).to_contain_text("Source deleted")
    expect(page.locator(f'#sources tr[data-id="{sid}"]')).to_have_count(0)
    assert live.client.get(f"/api/v1/sources/{sid}", headers=test_console.ADMIN).status_code == 404
    assert _api(live, "GET", f"/api/v1/requests/{rid}")["id"] == rid  # its requests stay
    deadline = time.monotonic() + 5
    while _post(url, again, **{"X-API-Key": key}).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)


FAILING = {"version": 1, "target": "contact", "fields": {"Email": {"expr": "email"}}}  # no SourceName/Type
FIXED = """version: 1
target: contact
fields:
  Email: {expr: email}
  SourceName: {constant: Web}
  SourceType: {constant: Form}
"""


def test_mapping_editor_preview_save_and_replay_failed(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Shop", "client_id": "acme", "config": {
        "parser": "mapping", "mapping": FAILING}})
    sid = src["id"]
    rids = []
    for email in ("one@example.com", "two@example.com"):
        r = httpx.post(src["ingest_url"] + "?wait=1", json={"email": email})
        assert r.json()["receipt"]["state"] == "failed", r.text
        rids.append(r.json()["request_id"])

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/sources/{sid}")
    page.click("#edit-mapping")
    expect(page.locator("#draft")).to_have_value(
        "version: 1\ntarget: contact\nfields:\n  Email:\n    expr: email\n")
    # the saved mapping, previewed: both stored requests fail, with the field errors of each
    page.click("#preview-button")
    for rid in rids:
        item = page.locator(f'#preview article[data-id="{rid}"]')
        expect(item).to_contain_text("SourceName is required", timeout=30_000)  # may start the parse pool
        expect(item.locator(".b-failed").first).to_be_visible()

    # a fixed draft and a pasted body: the preview follows as they are typed (no reload), records
    # for all, and nothing is written
    page.evaluate("window.__not_reloaded = true")
    page.fill("#draft", FIXED)
    for rid, email in zip(rids, ("one@example.com", "two@example.com"), strict=True):
        item = page.locator(f'#preview article[data-id="{rid}"]')
        expect(item).to_contain_text("draft processed 1 record(s)")
        if rid == rids[-1]:  # newest first: the first one's records are open
            expect(item).to_contain_text(email)
    page.click("#mapping-form details summary")
    page.fill("#paste-body", '{"email": "pasted@example.com"}')
    expect(page.locator("#preview-pasted")).to_contain_text("pasted@example.com")
    expect(page.locator("#preview-pasted .b-processed")).to_be_visible()
    assert page.evaluate("window.__not_reloaded") is True
    page.fill("#draft", "version: 1\ntarget: nowhere\nfields: {A: {expr: a}}\n")
    expect(page.locator("#draft-errors")).to_contain_text("target")
    page.fill("#draft", FIXED)
    expect(page.locator("#draft-errors")).to_have_count(0)
    page.click("#preview-button")  # the button does the same without script
    expect(page.locator("#preview-pasted")).to_contain_text("pasted@example.com")
    screenshots(page, "source-mapping-preview")
    assert _config(live, sid)["mapping"] == FAILING
    assert [_api(live, "GET", f"/api/v1/requests/{rid}")["state"] for rid in rids] == ["failed", "failed"]

    # a draft that is not a mapping is named, not saved
    page.fill("#draft", "version: 1\ntarget: contact\nfields: {}\n")
    page.click("#save-mapping")
    expect(page.locator("#draft-errors")).to_be_visible()
    page.fill("#draft", "version: [1\n")
    page.click("#preview-button")
    expect(page.locator("#draft-errors")).to_contain_text("not valid YAML at line")
    assert _config(live, sid)["mapping"] == FAILING

    # save: the next version; then replay the requests that failed
    page.fill("#draft", FIXED)
    page.click("#save-mapping")
    expect(page.locator("#saved")).to_contain_text("Saved as mapping version 2")
    expect(page.locator("#failed-count")).to_contain_text("2 stored request(s) of this source failed")
    assert _config(live, sid)["mapping"]["version"] == 2
    assert "SourceName" in _config(live, sid)["mapping"]["fields"]
    screenshots(page, "source-mapping-saved")
    page.click("#replay-failed-button")
    expect(page.locator("#notice")).to_contain_text("Replayed 2 failed request(s): 2 processed now.")
    for rid in rids:
        expect(page.locator(f'#replayed tr[data-id="{rid}"] .b-processed')).to_be_visible()
        assert _api(live, "GET", f"/api/v1/requests/{rid}")["state"] == "processed"
    latest = _api(live, "GET", "/api/v1/audit", params={"limit": 5})["items"]
    assert any(e["action"] == "source.patch" and e["target"] == sid for e in latest)


def test_settings_delete_and_mapping_forms_need_the_csrf_token(live: Any) -> None:
    """Without the page's token each form answers 403 and nothing changes; with it, it works."""
    import re

    from tests.integration.test_tenants import _login

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Guarded", "client_id": "acme"})
    sid = src["id"]
    before = _config(live, sid)
    draft = "version: 1\ntarget: record\nfields:\n  A: {expr: a}\n"
    with httpx.Client(base_url=live.url, timeout=15) as c:
        csrf = _login(c, ADMIN_TOKEN)
        base = re.search(r'name="base" value="([^"]+)"', c.get(f"/ui/sources/{sid}/settings").text)
        assert base
        import html

        forms = [(f"/ui/sources/{sid}/settings", {"base": html.unescape(base.group(1)), "rate": "9"}),
                 (f"/ui/sources/{sid}/mapping", {"action": "save", "draft": draft}),
                 (f"/ui/sources/{sid}/mapping/replay", {}),
                 (f"/ui/sources/{sid}/delete", {"confirm_name": "Guarded"})]
        for path, form in forms:
            for token in (None, "forged"):
                r = c.post(path, data={**form, **({"csrf": token} if token else {})})
                assert r.status_code == 403, (path, r.status_code)
        assert _config(live, sid) == before
        r = c.post(f"/ui/sources/{sid}/settings", data={**forms[0][1], "csrf": csrf})
        assert r.status_code == 303, r.text[:500]
        assert _config(live, sid) == {**before, "rate": 9.0}  # only the field posted changed


def test_a_client_session_edits_its_own_sources_but_not_admin_settings(live: Any) -> None:
    """acme's token edits acme's source and previews its mapping; the admin-only setting is neither
    shown nor taken from its form (another client's source is the tenant route walk's: 404)."""
    from tests.integration.test_tenants import _login

    tok = _api(live, "POST", "/api/v1/tokens", json={"name": "acme", "client_id": "acme"})["token"]
    src = _api(live, "POST", "/api/v1/sources", json={"name": "Mine", "client_id": "acme"})
    sid = src["id"]
    rid = httpx.post(src["ingest_url"] + "?wait=1", json={"a": "stored"}).json()["request_id"]
    with httpx.Client(base_url=live.url, timeout=15) as c:
        csrf = _login(c, tok)
        page = c.get(f"/ui/sources/{sid}/settings").text
        assert 'id="f-rate"' in page and "allow_private_destinations" not in page
        r = c.post(f"/ui/sources/{sid}/settings", data={"csrf": csrf, "base": "{}", "rate": "4",
                                                         "allow_private_destinations": "on", "checkboxes": "1"})
        assert r.status_code == 303, r.text[:500]
        cfg = _config(live, sid)
        assert cfg["rate"] == 4.0 and cfg["allow_private_destinations"] is False
        r = c.post(f"/ui/sources/{sid}/mapping", data={
            "csrf": csrf, "action": "preview", "draft": "version: 1\ntarget: record\nfields:\n  A: {expr: a}\n"})
        assert r.status_code == 200 and f'data-id="{rid}"' in r.text and "&#34;stored&#34;" in r.text
    assert _config(live, sid)["parser"] == "generic"  # the preview saved nothing
