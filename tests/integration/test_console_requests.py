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


CONTACT = {"SourceName": "Web", "SourceType": "Form", "Email": "detail@example.com", "FirstName": "Ada"}


def test_request_detail_bodies_by_type_rejection_curl_and_deliveries(live: Any, ui: Page) -> None:
    import subprocess

    from playwright.sync_api import expect

    raw = _api(live, "POST", "/api/v1/sources", json={"name": "Raw", "client_id": "acme"})
    url = raw["ingest_url"]
    bodies = {
        "json": (b'{"order":{"id":7,"items":[1,2]}}', "application/json"),
        "ndjson": (b'{"a":1}\n{"b": 2}\n\n{"c":[3]}\n', "application/x-ndjson"),
        "csv": (b"email,name\nx@example.com,Ada\ny@example.com,Bo\n", "text/csv"),
        "form": (b"email=z%40example.com&name=Cy", "application/x-www-form-urlencoded"),
        "xml": (b"<order><id>7</id><item sku='a'/></order>", "application/xml"),
        "binary": (b"\x00\xff\xfe binary", "application/octet-stream"),
    }
    rid = {k: httpx.post(url, content=b, headers={"Content-Type": t}).json()["request_id"]
           for k, (b, t) in bodies.items()}
    ui.login(ADMIN_TOKEN)
    page = ui.page

    page.goto(f"/ui/requests/{rid['json']}")
    expect(page.locator('#body-pretty[data-kind="json"]')).to_contain_text('"items": [\n      1,')
    expect(page.locator("#body-pretty .j-key").first).to_have_text('"order"')  # highlighted by token
    expect(page.locator("#body-pretty .j-num").first).to_have_text("7")
    expect(page.locator("#body")).to_be_hidden()  # raw behind the toggle
    page.click("#body-raw-toggle summary")
    expect(page.locator("#body")).to_have_text('{"order":{"id":7,"items":[1,2]}}')
    screenshots(page, "request")
    page.goto(f"/ui/requests/{rid['ndjson']}")
    lines = page.locator('#body-pretty[data-kind="ndjson"] tr')
    expect(lines).to_have_count(3)  # one per JSON line, numbered as in the body
    expect(lines.nth(1)).to_contain_text('{"b":2}')
    expect(lines.nth(2).locator("td").first).to_have_text("4")
    page.goto(f"/ui/requests/{rid['csv']}")
    expect(page.locator('#body-pretty[data-kind="csv"] th')).to_have_text(["email", "name"])
    expect(page.locator('#body-pretty[data-kind="csv"] tbody tr')).to_have_count(2)
    page.goto(f"/ui/requests/{rid['form']}")
    expect(page.locator('#body-pretty[data-kind="form"] tbody tr').first).to_contain_text("z@example.com")
    page.goto(f"/ui/requests/{rid['xml']}")
    expect(page.locator('#body-pretty[data-kind="xml"]')).to_contain_text("<order>\n  <id>7</id>")
    expect(page.locator("#body-pretty .x-attr")).to_have_text(["sku"])
    expect(page.locator("#body-pretty .x-val")).to_have_text(['"a"'])
    page.goto(f"/ui/requests/{rid['binary']}")
    expect(page.locator("#body-pretty")).to_have_count(0)
    expect(page.locator("#body-base64")).to_be_visible()

    # copy as cURL: the copied command, run by a shell, sends the same request again
    page.goto(f"/ui/requests/{rid['json']}")
    page.click("#copy-curl")
    command = page.evaluate("navigator.clipboard.readText()")
    assert command.startswith("curl -X POST ") and "-H 'content-type: application/json'" in command
    out = subprocess.run(["bash", "-c", command + " -s"], capture_output=True, text=True, timeout=30)
    again = __import__("json").loads(out.stdout)["request_id"]
    assert httpx.get(f"{live.url}/api/v1/requests/{again}/body",
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).content == bodies["json"][0]

    # a signature rejection names its reason
    signed = _api(live, "POST", "/api/v1/sources", json={"name": "Signed", "client_id": "acme", "secret": "s3cret-long-enough",
                                                         "config": {"signature": {"scheme": "github"}}})
    bad = httpx.post(signed["ingest_url"], json={"a": 1}, headers={"X-Hub-Signature-256": "sha256=00"})
    assert bad.status_code == 401
    page.goto(f"/ui/?source={signed['id']}&verdict=rejected")
    page.locator("#tail tbody tr a").first.click()
    expect(page.locator("#rejection")).to_contain_text("Invalid signature")
    expect(page.locator("#rejection strong")).not_to_be_empty()

    # records link the profiles they touched and every delivery they caused
    crm = _api(live, "POST", "/api/v1/sources", json={"name": "Signups", "client_id": "acme", "config": {
        "parser": "contact", "actions": [{"type": "forward", "name": "crm", "url": "http://127.0.0.1:9/hook"}]}})
    r = httpx.post(crm["ingest_url"] + "?wait=1", json=CONTACT).json()
    pid = r["receipt"]["records"][0]["profile_id"]
    page.goto(f"/ui/requests/{r['request_id']}")
    expect(page.locator(f'#record-profiles a[href="/ui/profiles/{pid}"]')).to_be_visible()
    row = page.locator("#request-deliveries tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("crm")
    row.locator("a").click()
    expect(page).to_have_url(re.compile(r"/ui/deliveries/"))


def test_api_docs_work_offline_and_describe_every_endpoint(live: Any, ui: Page) -> None:
    """Swagger UI renders from the package's files alone: the browser may reach nothing but the server."""
    from playwright.sync_api import expect

    outside: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(live.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ui.context.route("**/*", only_the_server)
    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/api/v1/docs")
    expect(page.locator(".swagger-ui .information-container")).to_contain_text("hookbay admin API")
    expect(page.locator(".swagger-ui button.authorize")).to_be_visible()  # the bearer scheme
    expect(page.locator('.opblock-summary-path[data-path="/V1/Data/{token}"]')).to_be_visible()
    screenshots(page, "api-docs")
    assert outside == []
    doc = httpx.get(f"{live.url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    assert {"/V1/Data/{token}", "/V1/Requests/{request_id}", "/V1/Test/{token}", "/healthz", "/readyz",
            "/metrics"} <= doc["paths"].keys()
    assert doc["paths"]["/api/v1/sources"]["get"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/V1/Data/{token}"]["post"]["security"] == []


def test_deliveries_filters_and_retry_of_the_matching_dead_letters(live: Any, ui: Page) -> None:
    import time

    from playwright.sync_api import expect

    def source(name: str, dest: str) -> dict[str, Any]:
        src = _api(live, "POST", "/api/v1/sources", json={"name": name, "client_id": "acme", "config": {
            "actions": [{"type": "forward", "name": f"to-{name}", "url": dest}]}})
        httpx.post(src["ingest_url"], json={"n": name})
        return src

    a = source("alpha", "http://127.0.0.1:9/alpha-hook")
    b = source("beta", "http://127.0.0.2:9/beta-hook")
    deadline = time.monotonic() + 15
    while len(_api(live, "GET", "/api/v1/deliveries", params={"state": "dead"})["items"]) < 2:
        assert time.monotonic() < deadline, "no dead letters"
        time.sleep(0.1)

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/deliveries")
    rows = page.locator("#deliveries tbody tr")
    expect(rows).to_have_count(2)
    screenshots(page, "deliveries")
    page.select_option("#dlv-source", a["id"])
    expect(page).to_have_url(re.compile(rf"source={a['id']}"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("to-alpha")
    page.goto("/ui/deliveries?destination=127.0.0.2")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("to-beta")
    page.goto("/ui/deliveries?error=not+a+public+address&range=1h&state=dead")
    expect(rows).to_have_count(2)
    page.goto("/ui/deliveries?action=email")
    expect(page.locator("#empty")).to_contain_text("No delivery matches these filters")

    # retry every dead letter matching the filter: alpha's goes back in the queue, beta's stays dead
    page.goto(f"/ui/deliveries?source={a['id']}&state=dead")
    page.click("#retry-all")
    expect(page.locator("#bulk-count")).to_contain_text("1 delivery matches")
    page.click("#bulk-confirm")
    expect(page.locator("#bulk-result")).to_contain_text("1 of 1 delivery(ies) queued to run again")
    page.click("#bulk-back")
    assert _query(page)["source"] == [a["id"]]
    def attempts(src: dict[str, Any]) -> int:
        d = _api(live, "GET", "/api/v1/deliveries", params={"source": src["id"]})["items"][0]
        return len(_api(live, "GET", f"/api/v1/deliveries/{d['id']}")["attempt_log"])

    deadline = time.monotonic() + 15
    while attempts(a) < 2:  # it ran again (and was refused again)
        assert time.monotonic() < deadline, "the matching dead letter did not run again"
        time.sleep(0.1)
    assert attempts(b) == 1


def test_tokens_page_creates_shows_once_and_revokes(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/tokens")
    expect(page.locator("#empty")).to_be_visible()
    page.fill("#token-name", "acme-ops")
    page.fill("#token-client", "acme")
    page.click("#token-create")
    token = page.locator("#new-token").input_value()
    assert token.startswith("hbt_")
    row = page.locator("#tokens tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("client acme")
    screenshots(page, "tokens")
    page.reload()  # shown once: the page's address is the list, without the secret
    expect(page.locator("#new-token")).to_have_count(0)
    assert token not in page.content()
    who = httpx.get(f"{live.url}/api/v1/sources", headers={"Authorization": f"Bearer {token}"})
    assert who.status_code == 200
    page.fill("#token-name", "")
    page.fill("#token-client", "x")
    page.evaluate("document.getElementById('token-name').removeAttribute('required')")
    page.click("#token-create")
    expect(page.locator("#token-error")).to_contain_text("name")
    page.locator("#tokens tbody tr button.revoke").click()  # the confirmation is accepted
    expect(page.locator("#notice")).to_contain_text("Token revoked")
    expect(page.locator("#tokens tbody tr")).to_have_count(0)
    assert httpx.get(f"{live.url}/api/v1/sources", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_receipt_error_links_to_the_body_line_it_names(live: Any, ui: Page) -> None:
    """A field error's path is a link to the highlighted line holding that value (and only when the
    body has that path); following it marks the line."""
    from playwright.sync_api import expect

    src = _api(live, "POST", "/api/v1/sources", json={"name": "Contacts", "client_id": "acme",
                                                      "config": {"parser": "contact"}})
    body = [{"SourceName": "web", "SourceType": "form", "Email": "ok@example.com"},
            {"SourceName": "web", "SourceType": "form", "Email": "not-an-email"}]
    rid = httpx.post(src["ingest_url"], json=body).json()["request_id"]
    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto(f"/ui/requests/{rid}")
    link = page.locator("#errors a.body-link")
    expect(link.first).to_be_visible()
    path = link.first.inner_text()
    assert path == "$[1].Email", path
    link.first.click()
    target = page.locator("#body-pretty .ln:target")
    expect(target).to_have_count(1)
    expect(target).to_have_text('    "Email": "not-an-email"')
    assert page.url.endswith("#" + (target.get_attribute("id") or "-"))
