"""Browser senders (issue #15): CORS for allowed origins, ``origin_not_allowed`` for others, the
redirect for plain HTML forms, limits per client address and the honeypot.

The Chromium tests serve their pages from a second loopback origin (``http://127.0.0.2:PORT``) and
post to the live server on ``127.0.0.1``, so the browser's own CORS rules decide what a page may
read. The header-level tests run on SQLite and PostgreSQL like every storage test."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import free_port

CHROMIUM = os.environ.get("HOOKBAY_TEST_CHROMIUM", "/usr/bin/chromium")

# The snippet docs/ingest-edge.md gives integrators, verbatim.
FETCH_SNIPPET = """
async function sendToHookbay(url, data) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(data),
    });
  } catch (err) {  // network failure, or this site's origin is not allowed
    return {ok: false, error: "network: " + err.message};
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    return {ok: false, status: response.status, error: body.error ? body.error.message : response.statusText};
  }
  return {ok: true, requestId: body.request_id, header: response.headers.get("X-Request-Id")};
}
"""


def _requests(live: Any, source_id: str) -> list[dict[str, Any]]:
    with live.admin() as c:
        r = c.get("/api/v1/requests", params={"source": source_id})
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]


class Site:
    """Another origin: serves ``pages`` (path -> HTML) from 127.0.0.2."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.port = free_port()
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                html = pages.get(self.path.split("?", 1)[0], "<p id=missing>missing</p>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.origin = f"http://127.0.0.2:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Chromium is required in CI but missing at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def sqlite_live(live_server_factory: Any, tmp_path: Any) -> Any:
    return live_server_factory(f"sqlite:///{tmp_path / 'browser.db'}")


# --- Chromium ------------------------------------------------------------------------------------


def test_page_on_an_allowed_origin_posts_json_and_reads_the_answer(browser: Any, site: Site, sqlite_live: Any) -> None:
    live = sqlite_live
    src = live.create_source(config={"allowed_origins": [site.origin]})
    site.pages["/"] = f"<script>{FETCH_SNIPPET}</script><p>shop</p>"
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(site.origin + "/")
        res = page.evaluate("([u, d]) => sendToHookbay(u, d)",
                            [f"{live.url}/V1/Data/{src['token']}", {"email": "ann@example.com"}])
    finally:
        ctx.close()
    assert res["ok"] is True, res
    assert res["requestId"] and res["header"] == res["requestId"]
    receipt = live.wait_state(res["requestId"])
    assert receipt["state"] == "processed"


def test_page_on_another_origin_cannot_post(browser: Any, site: Site, sqlite_live: Any) -> None:
    live = sqlite_live
    src = live.create_source(config={"allowed_origins": ["https://shop.example.com"]})
    site.pages["/"] = f"<script>{FETCH_SNIPPET}</script>"
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(site.origin + "/")
        res = page.evaluate("([u, d]) => sendToHookbay(u, d)",
                            [f"{live.url}/V1/Data/{src['token']}", {"email": "eve@example.com"}])
    finally:
        ctx.close()
    assert res["ok"] is False and res["error"].startswith("network:"), res
    items = _requests(live, src["id"])
    assert items and all(i["verdict"] == "rejected" and i["rule"] == "origin" and i["status"] == 403 for i in items)


def test_plain_html_form_follows_the_redirect(browser: Any, site: Site, sqlite_live: Any) -> None:
    live = sqlite_live
    src = live.create_source(config={"allowed_origins": [site.origin], "redirect_url": site.origin + "/thanks",
                                     "honeypot_field": "website"})
    site.pages["/form"] = (
        f'<form method="post" action="{live.url}/V1/Data/{src["token"]}">'
        '<input name="email" id="email"><input name="website" id="website" style="display:none" tabindex="-1">'
        '<button id="send">Send</button></form>')
    site.pages["/thanks"] = "<p id=thanks>Thanks!</p>"
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(site.origin + "/form")
        page.fill("#email", "ann@example.com")
        page.click("#send")
        page.wait_for_url(f"{site.origin}/thanks?request_id=*")
        rid = page.url.split("request_id=", 1)[1]
        # a bot fills every field, the hidden one too: answered the same, stored as spam
        page.goto(site.origin + "/form")
        page.fill("#email", "bot@example.com")
        page.evaluate("document.getElementById('website').value = 'http://spam.example'")
        page.click("#send")
        page.wait_for_url(f"{site.origin}/thanks?request_id=*")
        spam_id = page.url.split("request_id=", 1)[1]
    finally:
        ctx.close()
    assert live.wait_state(rid)["state"] == "processed"
    by_id = {i["id"]: i for i in _requests(live, src["id"])}
    assert by_id[spam_id]["verdict"] == "spam" and by_id[spam_id]["state"] == "spam"


# --- headers, on SQLite and PostgreSQL -----------------------------------------------------------

ORIGIN = "https://shop.example.com"


def test_preflight_and_answers_for_an_allowed_origin(live: Any) -> None:
    src = live.create_source(config={"allowed_origins": [ORIGIN], "methods": ["POST", "PUT"],
                                     "required_headers": {"X-Shop": "1"}})
    url = f"/V1/Data/{src['token']}"
    r = live.client.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "content-type, x-shop, x-evil"})
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-methods"] == "POST, PUT"
    allowed = [h.strip() for h in r.headers["access-control-allow-headers"].split(",")]
    assert {"content-type", "x-api-key", "idempotency-key", "x-shop"} <= set(allowed) and "x-evil" not in allowed
    assert int(r.headers["access-control-max-age"]) > 0 and r.headers["vary"] == "Origin"
    ok = live.client.post(url, json={"a": 1}, headers={"Origin": ORIGIN, "X-Shop": "1"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert ok.headers["access-control-expose-headers"] == "X-Request-Id"
    # an error answer is readable by the page too
    bad = live.client.post(url, json={"a": 1}, headers={"Origin": ORIGIN})
    assert bad.status_code == 403 and bad.headers["access-control-allow-origin"] == ORIGIN
    # server to server: no Origin, no CORS headers, unaffected
    s2s = live.client.post(url, json={"a": 1}, headers={"X-Shop": "1"})
    assert s2s.status_code == 200 and "access-control-allow-origin" not in s2s.headers


def test_other_origins_are_403_and_logged_preflight_too(live: Any) -> None:
    src = live.create_source(config={"allowed_origins": [ORIGIN]})
    url = f"/V1/Data/{src['token']}"
    pre = live.client.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    post = live.client.post(url, json={"a": 1}, headers={"Origin": "https://evil.example"})
    for r in (pre, post):
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in r.headers
    items = _requests(live, src["id"])
    assert sorted((i["method"], i["rule"], i["status"]) for i in items) == [("OPTIONS", "origin", 403),
                                                                          ("POST", "origin", 403)]


def test_star_allows_any_origin(live: Any) -> None:
    src = live.create_source(config={"allowed_origins": ["*"]})
    r = live.client.post(f"/V1/Data/{src['token']}", json={"a": 1}, headers={"Origin": "https://anyone.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_sources_without_origins_behave_as_before(live: Any) -> None:
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    pre = live.client.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 405
    r = live.client.post(url, json={"a": 1}, headers={"Origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_redirect_only_for_html_and_only_http_urls(live: Any) -> None:
    with live.admin() as c:
        for bad in ("javascript:alert(1)", "//evil.example/x", "ftp://x.example/", "https://u:p@x.example/"):
            r = c.post("/api/v1/sources", json={"name": "r", "client_id": "acme", "config": {"redirect_url": bad}})
            assert r.status_code == 422, bad
    src = live.create_source(config={"redirect_url": "https://shop.example.com/thanks?from=form#top"})
    url = f"/V1/Data/{src['token']}"
    html = live.client.post(url, data={"email": "a@example.com"},
                            headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert html.status_code == 303
    rid = html.headers["x-request-id"]
    assert html.headers["location"] == f"https://shop.example.com/thanks?from=form&request_id={rid}#top"
    js = live.client.post(url, json={"a": 1}, headers={"Accept": "*/*"})
    assert js.status_code == 200 and js.json()["status"] == "accepted"


def test_rate_per_address(live_server_factory: Any, db_url: str) -> None:
    live = live_server_factory(db_url, trusted_proxies="127.0.0.1/32")
    src = live.create_source(config={"rate_per_ip": 0.01, "burst_per_ip": 2})
    url = f"/V1/Data/{src['token']}"
    a = [live.client.post(url, json={"n": i}, headers={"X-Forwarded-For": "203.0.113.7"}).status_code
         for i in range(3)]
    assert a == [200, 200, 429]
    limited = live.client.post(url, json={"n": 9}, headers={"X-Forwarded-For": "203.0.113.7"})
    assert int(limited.headers["retry-after"]) >= 1
    # another address has its own bucket
    assert live.client.post(url, json={"n": 1}, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200
    rejected = [i for i in _requests(live, src["id"]) if i["verdict"] == "rejected"]
    assert len(rejected) == 2 and {i["rule"] for i in rejected} == {"rate_per_ip"}
    assert {i["peer"] for i in rejected} == {"203.0.113.7"}


def test_honeypot_is_answered_like_any_other_but_never_processed(live: Any) -> None:
    src = live.create_source(config={"honeypot_field": "website"})
    url = f"/V1/Data/{src['token']}"
    human = live.client.post(url, data={"email": "a@example.com", "website": ""})
    bot = live.client.post(url, data={"email": "b@example.com", "website": "http://spam.example"})
    bot_json = live.client.post(url, json={"email": "c@example.com", "website": "x"})
    assert human.status_code == bot.status_code == bot_json.status_code == 200
    assert set(bot.json()) == set(human.json()) == {"status", "request_id"}
    assert live.wait_state(human.json()["request_id"])["state"] == "processed"
    waited = live.client.post(url + "?wait=1", data={"email": "d@example.com", "website": "x"})
    assert waited.status_code == 200 and set(waited.json()) == {"status", "request_id"}  # no receipt tells the bot
    for r in (bot, bot_json, waited):
        rc = live.client.get(f"/V1/Requests/{r.json()['request_id']}",
                             headers={"Authorization": "Bearer test-admin-token"}).json()
        assert rc["state"] == "spam" and rc["verdict"] == "spam" and rc["records"] == []


def test_console_source_page_shows_the_snippets(browser: Any, sqlite_live: Any) -> None:
    from tests.conftest import ADMIN_TOKEN

    live = sqlite_live
    src = live.create_source(config={"allowed_origins": ["*"], "honeypot_field": "website",
                                     "redirect_url": "https://shop.example.com/thanks"})
    ctx = browser.new_context(base_url=live.url)
    try:
        page = ctx.new_page()
        page.goto("/ui/login")
        page.fill("#token", ADMIN_TOKEN)
        page.click("#login")
        page.wait_for_url("**/ui/")
        page.goto(f"/ui/sources/{src['id']}")
        assert page.locator("#any-origin-warning").is_visible()
        page.click("#snippets summary")
        js = page.locator("#snippet-js").inner_text()
        form = page.locator("#snippet-form").inner_text()
    finally:
        ctx.close()
    assert src["ingest_url"] in js and "X-Request-Id" in js
    assert f'action="{src["ingest_url"]}"' in form and 'name="website"' in form


def test_a_tenants_html_answer_never_runs_on_hookbays_origin(browser: Any, site: Site, sqlite_live: Any) -> None:
    """A client token may choose the answer's type and body: even text/html with a script must not
    run on the origin the console shares (it could read the console with an admin's session)."""
    live = sqlite_live
    src = live.create_source(config={"allowed_origins": [site.origin], "response": {
        "content_type": "text/html", "body": "<p id=answer>ok</p><script>document.title = 'pwned'</script>"}})
    site.pages["/form"] = (f'<form method="post" action="{live.url}/V1/Data/{src["token"]}">'
                           '<input name="email" value="a@example.com"><button id="send">Send</button></form>')
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.goto(site.origin + "/form")
        page.click("#send")
        page.wait_for_url(f"{live.url}/V1/Data/**")
        page.wait_for_selector("#answer")
        assert page.title() != "pwned"
    finally:
        ctx.close()
