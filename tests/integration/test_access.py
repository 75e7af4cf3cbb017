"""Who may read /metrics and the API docs, and logout ending the session on the server (issue #11
finding 12)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN


def _login(c: httpx.Client, token: str) -> str:
    page = c.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    r = c.post("/ui/login", data={"csrf": csrf.group(1), "token": token, "next": "/ui/"})
    assert r.status_code == 303, r.text
    return str(c.cookies.get("hookbay_session"))


def _client_token(live: Any) -> str:
    with live.admin() as c:
        r = c.post("/api/v1/tokens", json={"name": "acme-ro", "client_id": "acme"})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_require_the_metrics_token_when_set(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url, metrics_token="scrape-secret-1")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    {"Authorization": "Basic c2NyYXBlLXNlY3JldC0x"}):
        r = live.client.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        assert "hookbay_" not in r.text
    r = live.client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-1"})
    assert r.status_code == 200 and "hookbay_requests_total" in r.text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_stay_open_without_a_token(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url)
    assert live.client.get("/metrics").status_code == 200


def test_private_docs_are_served_only_to_signed_in_users(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url, public_docs=False)
    paths = ("/api/v1/openapi.json", "/api/v1/docs")
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            r = live.client.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.json()["error"]["code"] == "unauthorized"
    client_token = _client_token(live)
    for token in (ADMIN_TOKEN, client_token):
        for path in paths:
            assert live.client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with httpx.Client(base_url=live.url) as browser:
        cookie = _login(browser, client_token)
    with httpx.Client(base_url=live.url, cookies={"hookbay_session": cookie}) as c:
        assert c.get("/api/v1/openapi.json").json()["paths"]
        assert c.get("/api/v1/docs").status_code == 200
    with httpx.Client(base_url=live.url, cookies={"hookbay_session": cookie[:-2] + "xx"}) as c:
        assert c.get("/api/v1/openapi.json").status_code == 401


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_docs_are_public_by_default(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url)
    assert live.client.get("/api/v1/openapi.json").status_code == 200


def test_logout_revokes_the_session_on_the_server(db_url: str, live_server_factory: Any) -> None:
    live = live_server_factory(db_url)
    with httpx.Client(base_url=live.url) as browser:
        cookie = _login(browser, ADMIN_TOKEN)
        home = browser.get("/ui/")
        assert home.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
        assert csrf
        time.sleep(1.1)  # a cookie is (token hash, expiry second): a later login is another session
        with httpx.Client(base_url=live.url) as second:
            other_cookie = _login(second, ADMIN_TOKEN)  # which stays
        assert other_cookie != cookie
        assert browser.post("/ui/logout", data={"csrf": csrf.group(1)}).status_code == 303
    # the cookie, replayed after logout (copied before), is refused on every page and on the API docs
    with httpx.Client(base_url=live.url, cookies={"hookbay_session": cookie}) as replay:
        r = replay.get("/ui/")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        assert replay.get("/ui/api/requests").status_code == 401
    with httpx.Client(base_url=live.url, cookies={"hookbay_session": other_cookie}) as still:
        assert still.get("/ui/").status_code == 200
    # a server restarted on the same database still refuses it
    again = live_server_factory(db_url)
    with httpx.Client(base_url=again.url, cookies={"hookbay_session": cookie}) as replay:
        assert replay.get("/ui/").status_code == 303
