"""The web console (/ui/) on a live server, on SQLite and on PostgreSQL: a real browser (the system's
Chromium, driven by Playwright) for the pages and their JavaScript, plain HTTP for redirects,
cookie flags and security headers.

Every browser test also fails on a CSP violation or a script error, so the pages are proven to
work under ``default-src 'self'`` (no inline script or style slipped in).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN

CHROMIUM = os.environ.get("HOOKBAY_TEST_CHROMIUM", "/usr/bin/chromium")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CONTACT = {"SourceName": "Web", "SourceType": "Form", "Email": "ledger@example.com", "FirstName": "Ada"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Chromium is required in CI but missing at {CHROMIUM} (scripts/test installs it)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


class Page:
    """A fresh browser context (no cookies) on one live server, recording CSP violations and
    script errors."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.context = browser.new_context(base_url=base, permissions=["clipboard-read", "clipboard-write"])
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("console", self._console)
        self.page.on("dialog", lambda d: d.accept())

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and ("Content Security Policy" in msg.text or "Refused to" in msg.text):
            self.problems.append(msg.text)

    def login(self, token: str) -> None:
        self.page.goto("/ui/login")
        self.page.fill("#token", token)
        self.page.click("#login")
        self.page.wait_for_url(re.compile(r"/ui/$"))

    def csrf(self) -> str:
        return str(self.page.locator('input[name="csrf"]').first.input_value())


@pytest.fixture
def ui(browser: Any, live: Any) -> Iterator[Page]:
    p = Page(browser, live.url)
    yield p
    p.context.close()
    assert p.problems == [], p.problems


def _api(live: Any, method: str, path: str, **kw: Any) -> Any:
    r = live.client.request(method, path, headers=ADMIN, **kw)
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


# --- browser ---------------------------------------------------------------------------------


def test_login_source_tail_detail_replay_playground_charts(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    page = ui.page
    # every page needs a login; a wrong token is refused, the right one lands on the tail
    page.goto("/ui/sources")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/sources$"))
    page.fill("#token", "hba_not-the-token")
    page.click("#login")
    expect(page.locator("#login-error")).to_contain_text("not valid")
    assert not [c for c in ui.context.cookies() if c["name"] == "hookbay_session"]
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login")
    expect(page).to_have_url(re.compile(r"/ui/sources$"))  # back where it was sent from
    expect(page.locator("#whoami")).to_have_text("admin")

    # create a source through the form: its page shows the ingest URL, and Copy copies it
    page.fill("#name", "Web Form")
    page.fill("#client_id", "acme")
    page.click("#create")
    expect(page.locator("#created")).to_be_visible()
    url = page.locator("#ingest-url").input_value()
    assert re.fullmatch(rf"{re.escape(live.url)}/V1/Data/[0-9a-f-]{{36}}", url), url
    source_id = page.locator("dl.facts code").first.inner_text()
    page.click('button[data-copy="ingest-url"]')
    expect(page.locator('button[data-copy="ingest-url"]')).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == url
    page.goto("/ui/sources")
    expect(page.locator(f'#sources tr[data-id="{source_id}"]')).to_contain_text("Web Form")

    # the live tail shows a request posted now, without reloading the page
    page.goto("/ui/")
    page.evaluate("window.__not_reloaded = true")
    r = httpx.post(url, json={"email": "tail@example.com", "address": {"city": "Oslo"}})
    assert r.status_code == 200
    rid = r.json()["request_id"]
    row = page.locator(f'#tail tr[data-id="{rid}"]')
    expect(row).to_contain_text("Web Form")
    expect(row.locator(".b-accepted")).to_be_visible()
    expect(row.locator(".b-processed")).to_be_visible()  # the state follows the worker
    assert page.evaluate("window.__not_reloaded") is True
    # filters: a verdict that does not match hides it
    page.select_option("#filter-verdict", "rejected")
    expect(page).to_have_url(re.compile(r"verdict=rejected"))
    expect(page.locator(f'#tail tr[data-id="{rid}"]')).to_have_count(0)
    page.select_option("#filter-verdict", "accepted")
    expect(page.locator(f'#tail tr[data-id="{rid}"]')).to_be_visible()

    # its detail: body, headers and the parsed record; Replay re-parses it
    page.locator(f'#tail tr[data-id="{rid}"] a').click()
    expect(page).to_have_url(re.compile(rf"/ui/requests/{rid}$"))
    expect(page.locator("#body")).to_contain_text('"tail@example.com"')
    expect(page.locator("#records")).to_contain_text('"address_city": "Oslo"')
    expect(page.locator("#headers")).to_contain_text("application/json")
    expect(page.locator("#state")).to_contain_text("processed")
    page.click("#replay")
    expect(page.locator("#replay-preview")).to_contain_text("Dry run (nothing changed yet)")
    page.click("#replay-apply")
    expect(page.locator("#replay-result")).to_contain_text("Replayed: processed → processed, 1 record(s)")
    expect(page.locator("#records")).to_contain_text('"email": "tail@example.com"')

    # playground: a record from a good body, an error for a malformed one; nothing stored
    contact = _api(live, "POST", "/api/v1/sources", json={"name": "Contacts", "client_id": "acme",
                                                          "config": {"parser": "contact"}})
    page.goto(f"/ui/playground?source={source_id}")
    page.fill("#pg-body", '{"email": "pg@example.com", "n": 2}')
    page.click("#pg-run")
    expect(page.locator("#pg-state")).to_have_text("processed")
    expect(page.locator("#pg-records")).to_contain_text('"email": "pg@example.com"')
    page.fill("#pg-body", '{"email": "pg@example.com", ')
    page.click("#pg-run")
    expect(page.locator("#pg-state")).to_have_text("failed")
    expect(page.locator("#pg-errors")).to_contain_text("malformed_body")
    expect(page.locator("#pg-records")).to_contain_text("No records.")
    page.select_option("#pg-source", contact["id"])
    page.fill("#pg-body", '{"SourceName": "Web", "SourceType": "Form", "Email": "pg@example.com", '
                          '"DateOfBirth": "31-31-1990"}')
    page.click("#pg-run")
    expect(page.locator("#pg-state")).to_have_text("processed")  # the record, with a field error
    expect(page.locator("#pg-records")).to_contain_text('"email": "pg@example.com"')
    expect(page.locator("#pg-errors")).to_contain_text("$.DateOfBirth")
    assert [i["id"] for i in _api(live, "GET", "/api/v1/requests")["items"]] == [rid]

    # charts: the traffic just sent, as SVG bars (one accepted, one rejected by method)
    assert httpx.get(url).status_code == 405
    page.goto("/ui/charts")
    svg = page.locator("#chart-traffic svg")
    expect(svg).to_be_visible()
    counts = page.eval_on_selector_all(
        "#chart-traffic rect.bar", "els => els.map(e => [e.dataset.kind, Number(e.dataset.count)])")
    totals: dict[str, int] = {}
    for kind, n in counts:
        totals[kind] = totals.get(kind, 0) + n
    assert totals == {"accepted": 1, "rejected": 1}
    expect(page.locator("#chart-failures rect.bar.k-rejected")).to_have_count(1)
    expect(page.locator("#rules")).to_contain_text("method")
    expect(page.locator("#chart-traffic figcaption")).to_contain_text("accepted 1")

    # log out: the session cookie is gone and pages need a login again
    page.click("header .who button")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_client_token_sees_only_its_own_client(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    mine = _api(live, "POST", "/api/v1/sources", json={"name": "Acme shop", "client_id": "acme"})
    theirs = _api(live, "POST", "/api/v1/sources", json={"name": "Globex shop", "client_id": "globex"})
    their_rid = httpx.post(theirs["ingest_url"], json={"secret": "globex data"}).json()["request_id"]
    my_rid = httpx.post(mine["ingest_url"], json={"n": 1}).json()["request_id"]
    token = _api(live, "POST", "/api/v1/tokens", json={"name": "acme-ui", "client_id": "acme"})

    ui.login(token["token"])
    page = ui.page
    expect(page.locator("#whoami")).to_have_text("client acme")
    expect(page.locator(f'#tail tr[data-id="{my_rid}"]')).to_be_visible()
    page.wait_for_timeout(1800)  # a poll of the live tail has run too
    expect(page.locator(f'#tail tr[data-id="{their_rid}"]')).to_have_count(0)
    assert "Globex" not in page.content()

    page.goto("/ui/sources")
    expect(page.locator(f'#sources tr[data-id="{mine["id"]}"]')).to_be_visible()
    expect(page.locator("#sources")).not_to_contain_text("Globex")
    expect(page.locator("#client_id")).to_have_count(0)  # the client is fixed to its own
    for path in (f"/ui/sources/{theirs['id']}", f"/ui/requests/{their_rid}", f"/ui/requests/{their_rid}/body",
                 f"/ui/?source={theirs['id']}", f"/ui/playground?source={theirs['id']}"):
        resp = page.goto(path)
        if path.startswith("/ui/playground"):  # the form does not offer it, and posting it is a 404
            assert resp.status == 200
            expect(page.locator("#pg-source option")).to_have_count(1)
            expect(page.locator(f'#pg-source option[value="{theirs["id"]}"]')).to_have_count(0)
            continue
        assert resp.status == 404, path
        assert "globex data" not in page.content()
    csrf = ui.csrf()
    resp = page.request.post(f"/ui/sources/{theirs['id']}", form={"csrf": csrf, "name": "stolen", "enabled": "false"})
    assert resp.status == 404
    resp = page.request.post("/ui/playground", form={"csrf": csrf, "source": theirs["id"], "body": "{}"})
    assert resp.status == 404
    resp = page.request.post(f"/ui/requests/{their_rid}/replay", form={"csrf": csrf})
    assert resp.status == 404
    assert _api(live, "GET", f"/api/v1/sources/{theirs['id']}")["name"] == "Globex shop"

    # a source created with a client token belongs to its client
    page.goto("/ui/sources")
    page.fill("#name", "Made by acme")
    page.click("#create")
    expect(page.locator("#created")).to_be_visible()
    assert {s["client_id"] for s in _api(live, "GET", "/api/v1/sources") if s["name"] == "Made by acme"} == {"acme"}

    # revoking the token ends its console session at the next page
    _api(live, "DELETE", f"/api/v1/tokens/{token['id']}")
    page.goto("/ui/sources")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))


def test_posts_without_the_csrf_token_are_refused(live: Any, ui: Page) -> None:
    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/sources")
    csrf = ui.csrf()
    src = _api(live, "POST", "/api/v1/sources", json={"name": "S", "client_id": "acme"})
    for form in ({"name": "no-token", "client_id": "acme"}, {"name": "bad", "client_id": "acme", "csrf": "x" * 43}):
        resp = page.request.post("/ui/sources", form=form)
        assert resp.status == 403
        assert "CSRF" in resp.text()
    assert page.request.post(f"/ui/sources/{src['id']}", form={"name": "renamed", "enabled": "true"}).status == 403
    assert page.request.post("/ui/logout", form={}).status == 403
    assert page.request.post("/ui/sources", data='{"name":"json"}',
                             headers={"Content-Type": "application/json"}).status == 403
    assert {s["name"] for s in _api(live, "GET", "/api/v1/sources")} == {"S"}
    # the same post with the page's token goes through
    resp = page.request.post("/ui/sources", form={"name": "with-token", "client_id": "acme", "csrf": csrf})
    assert resp.status == 200
    assert {s["name"] for s in _api(live, "GET", "/api/v1/sources")} == {"S", "with-token"}


def test_profiles_ledger_deliveries_and_retry(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    # a refused destination (loopback, private destinations not allowed) makes a dead letter at once
    src = _api(live, "POST", "/api/v1/sources", json={"name": "Signups", "client_id": "acme", "config": {
        "parser": "contact", "actions": [{"type": "forward", "name": "crm", "url": "http://127.0.0.1:9/hook"}]}})
    first = httpx.post(src["ingest_url"] + "?wait=1", json={**CONTACT, "EmailPermission": True})
    assert first.status_code == 200, first.text
    time.sleep(0.01)
    second = httpx.post(src["ingest_url"] + "?wait=1", json={**CONTACT, "EmailPermission": False})
    assert second.status_code == 200
    pid = first.json()["receipt"]["records"][0]["profile_id"]

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/profiles")
    expect(page.locator("#profiles")).to_contain_text("ledger@example.com")
    page.fill("#q", "LEDGER@example.com")
    page.click("#search")
    page.locator(f'a[href="/ui/profiles/{pid}"]').click()
    expect(page.locator("#prof-email")).to_have_text("ledger@example.com")
    ledger = page.locator("#ledger tbody tr")
    expect(ledger).to_have_count(2)
    expect(ledger.nth(0)).to_contain_text("granted")
    expect(ledger.nth(1)).to_contain_text("revoked")
    expect(page.locator("#consent")).to_contain_text("revoked")
    expect(page.locator("#fields")).to_contain_text("Ada")

    page.goto("/ui/deliveries")
    page.select_option("#dlv-state", "dead")
    expect(page).to_have_url(re.compile(r"state=dead"))
    dead = page.locator("#deliveries tbody tr[data-id]")
    deadline = time.monotonic() + 15
    while dead.count() < 2:  # one per record, each refused at once
        assert time.monotonic() < deadline, "no dead letters"
        page.wait_for_timeout(300)
        page.reload()
    expect(dead.locator(".b-dead")).to_have_count(2)
    dead.first.locator("a").click()
    expect(page.locator("#dlv-state")).to_contain_text("dead")
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    expect(page.locator("#attempts")).to_contain_text("not a public address")
    page.click("#retry")
    expect(page.locator("#notice")).to_contain_text("Queued to run again")
    deadline = time.monotonic() + 15
    # it ran again and was refused again: a second attempt, and dead once that attempt is recorded
    # (the page is a snapshot: reload until both show, a running attempt may be listed before it ends)
    while (page.locator("#attempts tbody tr").count() < 2
           or "dead" not in (page.locator("#dlv-state").text_content() or "")):
        assert time.monotonic() < deadline, "the retried delivery did not run"
        page.wait_for_timeout(300)
        page.reload()
    expect(page.locator("#dlv-state")).to_contain_text("dead")


def test_source_edit_and_secret_rotation(live: Any, ui: Page) -> None:
    from playwright.sync_api import expect

    ui.login(ADMIN_TOKEN)
    page = ui.page
    page.goto("/ui/sources")
    page.fill("#name", "Billing")
    page.fill("#client_id", "acme")
    page.select_option("#signature", "github")
    page.fill("#secret", "provider-secret-1")
    page.check("#api_key")
    page.click("#create")
    key = page.locator("#new-api-key").input_value()
    assert key.startswith("hbk_")
    expect(page.locator("#new-secret")).to_have_count(0)  # the provider's own secret is never echoed
    url = page.locator("#ingest-url").input_value()
    assert httpx.post(url, json={}, headers={"X-API-Key": key}).status_code == 401  # unsigned

    # rotate: a generated secret is shown once and works at once; the old one stays for the grace
    page.select_option('select[name="grace_seconds"]', "3600")
    page.click("#rotate")
    new_secret = page.locator("#new-secret").input_value()
    assert new_secret and new_secret != "provider-secret-1"
    page.reload()
    expect(page.locator("#new-secret")).to_have_count(0)
    import hashlib
    import hmac

    body = b'{"a":1}'
    for secret in ("provider-secret-1", new_secret):
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        r = httpx.post(url, content=body, headers={"X-API-Key": key, "X-Hub-Signature-256": sig,
                                                    "Content-Type": "application/json"})
        assert r.status_code == 200, r.text

    # a new API key replaces the old one at once (after a confirmation)
    page.click("#rotate-api-key")
    new_key = page.locator("#new-api-key").input_value()
    assert new_key.startswith("hbk_") and new_key != key
    sig = "sha256=" + hmac.new(new_secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": sig, "Content-Type": "application/json"}
    assert httpx.post(url, content=body, headers={**headers, "X-API-Key": key}).status_code == 401
    assert httpx.post(url, content=body, headers={**headers, "X-API-Key": new_key}).status_code == 200

    # edit: rename and disable; a disabled source's URL answers 404
    page.fill("#edit-name", "Billing v2")
    page.select_option("#edit-enabled", "false")
    page.click("#save")
    expect(page.locator("#notice")).to_have_text("Saved.")
    expect(page.locator("h1")).to_have_text("Source Billing v2")
    deadline = time.monotonic() + 5
    while httpx.post(url, content=body, headers={**headers, "X-API-Key": new_key}).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)


# --- plain HTTP --------------------------------------------------------------------------------


def _login(c: httpx.Client, token: str, **headers: str) -> httpx.Response:
    page = c.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return c.post("/ui/login", data={"csrf": csrf.group(1), "token": token, "next": "/ui/"}, headers=headers)


def _set_cookie(resp: httpx.Response, name: str) -> str:
    found = [h for h in resp.headers.get_list("set-cookie") if h.startswith(name + "=")]
    assert len(found) == 1, resp.headers.get_list("set-cookie")
    return found[0]


def test_redirects_cookie_flags_and_security_headers(live: Any) -> None:
    with httpx.Client(base_url=live.url) as c:
        r = c.get("/ui")
        assert r.status_code == 308 and r.headers["location"] == "/ui/"
        for path in ("/ui/", "/ui/sources", "/ui/requests/req_x", "/ui/playground", "/ui/profiles",
                     "/ui/deliveries", "/ui/charts", "/ui/profiles/prf_x", "/ui/deliveries/dlv_x"):
            r = c.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/ui/login?next=" + path.split("?")[0]), r.headers["location"]
        r = c.get("/ui/api/requests")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert c.post("/ui/sources", data={"name": "x", "client_id": "acme"}).status_code == 303  # to login

        page = c.get("/ui/login")
        assert page.status_code == 200
        for resp in (page, c.get("/ui/static/console.css"), c.get("/ui/nope")):
            assert "default-src 'self'" in resp.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
            assert resp.headers["x-frame-options"] == "DENY"
            assert resp.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text and " style=" not in page.text
        nonce = _set_cookie(page, "hookbay_login")
        assert "HttpOnly" in nonce and "SameSite=strict" in nonce and "Path=/ui" in nonce

        # the login form itself needs its CSRF token
        r = c.post("/ui/login", data={"token": ADMIN_TOKEN})
        assert r.status_code == 403 and "hookbay_session" not in r.headers.get("set-cookie", "")
        r = _login(c, "wrong-token")
        assert r.status_code == 401 and "hookbay_session" not in r.headers.get("set-cookie", "")

        r = _login(c, ADMIN_TOKEN)
        assert r.status_code == 303 and r.headers["location"] == "/ui/"
        cookie = _set_cookie(r, "hookbay_session")
        attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
        assert "httponly" in attrs and "samesite=strict" in attrs and "path=/ui" in attrs
        assert "secure" not in attrs  # plain http
        value = cookie.split(";")[0].split("=", 1)[1]
        assert ADMIN_TOKEN not in value  # the cookie holds a hash of the token, never the token

        home = c.get("/ui/")
        assert home.status_code == 200 and home.headers["cache-control"] == "no-store"
        assert home.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in home.headers["content-security-policy"]
        assert home.headers["x-frame-options"] == "DENY"
        assert c.get("/ui/api/requests").json()["items"] == []
        assert c.get("/ui/login").status_code == 303  # already logged in

        # a tampered or expired cookie is no session
        parts = value.split(".")
        for bad in (".".join([*parts[:2], str(int(parts[2]) + 3600), parts[3]]),
                    ".".join([parts[0], "0" * 64, *parts[2:]]), "v1.x.1.y", ""):
            with httpx.Client(base_url=live.url, cookies={"hookbay_session": bad}) as other:
                assert other.get("/ui/").status_code == 303

        # logout (with its CSRF token) clears the cookie
        csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
        assert csrf
        r = c.post("/ui/logout", data={"csrf": csrf.group(1)})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        cleared = _set_cookie(r, "hookbay_session")
        assert "Max-Age=0" in cleared and "Path=/ui" in cleared
        assert c.get("/ui/").status_code == 303

    # login never redirects off the console
    with httpx.Client(base_url=live.url) as c:
        page = c.get("/ui/login", params={"next": "//evil.example/x"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf and "evil" not in page.text
        r = c.post("/ui/login", data={"csrf": csrf.group(1), "token": ADMIN_TOKEN, "next": "https://evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/"

    # the admin API and ingest are untouched by the console
    assert live.client.get("/api/v1/openapi.json").json()["paths"].keys().isdisjoint(
        {p for p in ("/ui", "/ui/", "/ui/login")})
    assert live.client.get("/").status_code == 404


def test_cookie_is_secure_behind_a_trusted_https_proxy(live_server_factory: Any, db_url: str) -> None:
    proxied = live_server_factory(db_url, trusted_proxies="127.0.0.1/32")
    with httpx.Client(base_url=proxied.url) as c:
        cookie = _set_cookie(_login(c, ADMIN_TOKEN, **{"X-Forwarded-Proto": "https"}), "hookbay_session")
        assert "secure" in [a.strip().lower() for a in cookie.split(";")[1:]]
    direct = live_server_factory(db_url)  # an untrusted peer cannot claim https
    with httpx.Client(base_url=direct.url) as c:
        cookie = _set_cookie(_login(c, ADMIN_TOKEN, **{"X-Forwarded-Proto": "https"}), "hookbay_session")
        assert "secure" not in [a.strip().lower() for a in cookie.split(";")[1:]]


def test_request_detail_of_a_binary_body(live: Any) -> None:
    src = _api(live, "POST", "/api/v1/sources", json={"name": "Bin", "client_id": "acme"})
    body = bytes(range(256))
    rid = httpx.post(src["ingest_url"], content=body, headers={"Content-Type": "application/octet-stream"}
                     ).json()["request_id"]
    with httpx.Client(base_url=live.url) as c:
        assert _login(c, ADMIN_TOKEN).status_code == 303
        page = c.get(f"/ui/requests/{rid}")
        assert page.status_code == 200
        assert "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|" in page.text
        raw = c.get(f"/ui/requests/{rid}/body")
        assert raw.content == body
        assert raw.headers["content-disposition"].startswith("attachment")
        assert raw.headers["content-type"] == "application/octet-stream"


def test_client_token_sees_only_its_own_profiles(live: Any) -> None:
    """Issue #19 rows 6 and 7: the console's profile list, its search and a profile's page apply the
    client filter of the signed-in token. Another client's profile is not listed, not found by its
    email, and its page is a 404 like any unknown id, exactly as in the API."""
    pids = {}
    for client, email in (("acme", "ada@acme.example"), ("globex", "hank@globex.example")):
        src = _api(live, "POST", "/api/v1/sources", json={"name": f"{client} form", "client_id": client,
                                                          "config": {"parser": "contact"}})
        r = httpx.post(src["ingest_url"] + "?wait=1", json={**CONTACT, "Email": email})
        assert r.status_code == 200, r.text
        pids[client] = r.json()["receipt"]["records"][0]["profile_id"]
    token = _api(live, "POST", "/api/v1/tokens", json={"name": "acme-ui", "client_id": "acme"})["token"]
    with httpx.Client(base_url=live.url) as c:
        assert _login(c, token).status_code == 303
        listing = c.get("/ui/profiles")
        assert listing.status_code == 200
        assert pids["acme"] in listing.text and "ada@acme.example" in listing.text
        assert pids["globex"] not in listing.text and "globex" not in listing.text
        found = c.get("/ui/profiles", params={"q": "hank@globex.example"})
        assert found.status_code == 200 and pids["globex"] not in found.text
        assert "No profile has that email." in found.text
        theirs = c.get(f"/ui/profiles/{pids['globex']}")
        assert theirs.status_code == 404 and "hank@globex.example" not in theirs.text
        unknown = c.get("/ui/profiles/prf_00000000000000000000000000")
        assert unknown.status_code == 404
        mine = c.get(f"/ui/profiles/{pids['acme']}")
        assert mine.status_code == 200 and "ada@acme.example" in mine.text
    with httpx.Client(base_url=live.url) as admin:  # the admin sees both: the filter is the token's
        assert _login(admin, ADMIN_TOKEN).status_code == 303
        assert admin.get(f"/ui/profiles/{pids['globex']}").status_code == 200
        assert pids["globex"] in admin.get("/ui/profiles").text
