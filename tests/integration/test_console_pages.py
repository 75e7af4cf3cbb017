"""Every console page, walked from the console's route table (a new page is included without
touching this test), at 1280x800 and 390x844 in Chromium on SQLite and PostgreSQL: a screenshot of
each page at each size goes to the run's artifact directory, and a page fails on any console error,
script error or CSP violation, on a badge that wraps, on a page wider than the phone, and on a
navigation link a phone cannot reach."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.routing import Route

from tests.conftest import ADMIN_TOKEN
from tests.integration import test_console
from tests.integration.test_console import CONTACT, _api
from tests.integration.test_console_requests import SIZES

browser = test_console.browser

# the query a page needs to be a page (not a "bad request" error page)
QUERIES = {"/ui/bulk/requests": "action=replay", "/ui/bulk/deliveries": "state=dead"}

CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI);
});
"""

LAYOUT_PROBLEMS = """
() => {
  const out = [];
  for (const b of document.querySelectorAll(".badge")) {
    if (b.getClientRects().length > 1 || b.getBoundingClientRect().height > 26) out.push("badge wraps: " + b.textContent);
  }
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) {
    const wide = [...document.querySelectorAll("main *")].filter(e => !e.closest("table.grid, pre") && e.getBoundingClientRect().right > window.innerWidth + 1);
    const first = wide[0];
    out.push("page wider than the window: " + doc.scrollWidth + "px, first at <" + (first ? first.tagName.toLowerCase() +
             (first.id ? "#" + first.id : "") + "> " + first.textContent.slice(0, 40) : "?"));
  }
  for (const a of document.querySelectorAll("header.top nav a")) {
    const r = a.getBoundingClientRect();
    if (r.width === 0 || r.left < 0 || r.right > window.innerWidth + 1) out.push("nav link out of reach: " + a.textContent);
  }
  return out;
}
"""


def _get_paths(app: Any) -> list[str]:
    out = []
    for r in app.console.app.routes:
        if isinstance(r, Route) and "GET" in (r.methods or ()):
            out.append(r.path)
    return sorted(set(out))


def _samples(live: Any) -> dict[str, str]:
    """One object of each kind, for the pages with an id in their path."""
    src = _api(live, "POST", "/api/v1/sources", json={
        "name": "Signup form with a rather long name", "client_id": "acme",
        "config": {"parser": "contact", "relay": True,
                   "actions": [{"type": "forward", "name": "crm", "url": "http://127.0.0.1:9/refused"}]}})
    r = httpx.post(src["ingest_url"] + "?wait=1", json={**CONTACT, "EmailPermission": True})
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    httpx.post(src["ingest_url"], content=b"{broken", headers={"content-type": "application/json"})
    deadline = time.monotonic() + 15
    while not (items := _api(live, "GET", "/api/v1/deliveries", params={"state": "dead"})["items"]):
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.1)
    _api(live, "POST", "/api/v1/tokens", json={"name": "acme ops", "client_id": "acme"})
    _api(live, "POST", f"/api/v1/sources/{src['id']}/relay-tokens", json={"name": "dc"})
    _api(live, "POST", "/api/v1/alert-rules", json={"name": "quiet", "client_id": "acme", "condition": "silence",
                                                   "minutes": 5, "channels": [{"type": "email", "to": "o@example.com"}]})
    return {"source_id": src["id"], "request_id": rid, "delivery_id": items[0]["id"],
            "profile_id": r.json()["receipt"]["records"][0]["profile_id"]}


def test_every_console_page_at_both_sizes(browser: Any, live: Any) -> None:
    ids = _samples(live)
    db = "pg" if "postgresql" in live.settings.database_url else "sqlite"
    out = Path(os.environ.get("HOOKBAY_TEST_ARTIFACTS", "tmp/artifacts")) / "screenshots" / "pages"
    out.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(base_url=live.url)
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"{page.url}: console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"{page.url}: script error: {e}"))

    def shoot(url: str, name: str) -> None:
        for size, (w, h) in SIZES.items():
            page.set_viewport_size({"width": w, "height": h})
            resp = page.goto(url)
            assert resp is not None and resp.status == 200, (url, resp and resp.status)
            page.wait_for_load_state("networkidle")
            problems.extend(f"{url} at {size}: {p}" for p in page.evaluate(LAYOUT_PROBLEMS))
            page.screenshot(path=str(out / f"{name}-{size}-{db}.png"), full_page=True)

    shoot("/ui/login", "login")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login")
    page.wait_for_url(re.compile(r"/ui/$"))

    walked = []
    for path in _get_paths(live.app):
        missing = [p for p in re.findall(r"\{(\w+)\}", path) if p not in ids]
        assert not missing, f"{path}: give this test a sample {missing} so the page is walked"
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        url += "?" + QUERIES[path] if path in QUERIES else ""
        head = page.request.get(url, max_redirects=0)
        if 300 <= head.status < 400:
            continue  # /ui -> /ui/, and the login page once signed in (walked before)
        assert head.status == 200, (url, head.status)
        if not head.headers.get("content-type", "").startswith("text/html"):
            continue  # a download or the live tail's JSON: not a page
        shoot(url, re.sub(r"[^a-z0-9]+", "-", path.removeprefix("/ui").lower()).strip("-") or "requests")
        walked.append(path)
    context.close()
    assert problems == [], "\n".join(problems)
    assert {"/ui/", "/ui/alerts", "/ui/audit", "/ui/profiles/{profile_id}", "/ui/tokens"} <= set(walked)
    assert len(list(out.glob(f"*-{db}.png"))) == 2 * (len(walked) + 1)  # and the login page
