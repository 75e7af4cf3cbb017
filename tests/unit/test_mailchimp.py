"""The Mailchimp client against the local fake API over real HTTP, and the contact mapping."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from hookbay.actions.mailchimp import (
    MailchimpClient,
    ProviderError,
    base_url_for_key,
    contact_to_member,
    subscriber_hash,
)
from tests.fakes.mailchimp import create_app, run_in_thread

API_KEY = "0123456789abcdef0123456789abcdef-us6"
LIST = "a1b2c3d4e5"


@pytest.fixture
def fake() -> Iterator[tuple[Any, str]]:
    app = create_app(API_KEY, {LIST})
    url, stop = run_in_thread(app)
    try:
        yield app, url
    finally:
        stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


async def test_base_url_from_key_datacenter(http: httpx.AsyncClient) -> None:
    assert base_url_for_key(API_KEY) == "https://us6.api.mailchimp.com/3.0"
    with pytest.raises(ValueError):
        base_url_for_key("nodatacenter")
    c = MailchimpClient(http, API_KEY)
    assert c.base_url == "https://us6.api.mailchimp.com/3.0"
    assert API_KEY not in repr(c)


def test_subscriber_hash_is_md5_of_lowercased_email() -> None:
    assert subscriber_hash("Ann@Example.COM") == hashlib.md5(b"ann@example.com").hexdigest()


async def test_upsert_creates_then_updates(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    app, url = fake
    mc = MailchimpClient(http, API_KEY, base_url=url)
    h = hashlib.md5(b"ann@example.com").hexdigest()

    r1 = await mc.upsert_member(LIST, "Ann@Example.com", status_if_new="subscribed",
                                merge_fields={"FNAME": "Ann", "BIRTHDAY": "07/04"}, tags=["ski", "golf"])
    assert r1.status_code == 200 and r1.member_id == h
    assert '"status":"subscribed"' in r1.response_excerpt.replace(" ", "")
    m = app.state.members[(LIST, h)]
    assert m["status"] == "subscribed" and m["merge_fields"] == {"FNAME": "Ann", "BIRTHDAY": "07/04"}
    assert app.state.tags[(LIST, h)] == {"ski", "golf"}

    put, tags = app.state.calls
    assert put["method"] == "PUT" and put["path"] == f"/3.0/lists/{LIST}/members/{h}"
    assert put["json"] == {"email_address": "Ann@Example.com", "status_if_new": "subscribed",
                           "merge_fields": {"FNAME": "Ann", "BIRTHDAY": "07/04"}}
    assert put["headers"]["authorization"].startswith("Basic ")
    assert tags["json"] == {"tags": [{"name": "ski", "status": "active"}, {"name": "golf", "status": "active"}]}

    # Update: status_if_new no longer applies, merge fields merge, no tags call when none given.
    r2 = await mc.upsert_member(LIST, "ann@example.com", status_if_new="transactional",
                                merge_fields={"LNAME": "Lee"})
    assert r2.member_id == h
    assert m["status"] == "subscribed"
    assert m["merge_fields"] == {"FNAME": "Ann", "BIRTHDAY": "07/04", "LNAME": "Lee"}
    assert len(app.state.calls) == 3

    # An explicit opt-out is applied to the existing member.
    await mc.upsert_member(LIST, "ann@example.com", status_if_new="unsubscribed", merge_fields={},
                           status="unsubscribed")
    assert m["status"] == "unsubscribed"
    assert len(app.state.members) == 1


async def test_contact_mapping_is_accepted_by_the_api(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    app, url = fake
    contact = {"email": "bo@example.org", "first_name": "Bo", "last_name": "Dahl", "mobile": "+4512345678",
               "date_of_birth": "1990-12-31", "interests": ["hiking"],
               "address": {"line1": "1 Main St", "city": "Denver", "state": "CO", "zip": "80202", "country": "US"}}
    res = await MailchimpClient(http, API_KEY, base_url=url).upsert_member(
        LIST, **contact_to_member(contact, {"email": None}))
    m = app.state.members[(LIST, res.member_id)]
    assert m["status"] == "transactional"
    assert m["merge_fields"]["ADDRESS"]["addr1"] == "1 Main St"
    assert m["merge_fields"]["BIRTHDAY"] == "12/31"
    assert app.state.tags[(LIST, res.member_id)] == {"hiking"}


async def test_bad_api_key_is_401(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    app, url = fake
    mc = MailchimpClient(http, "wrong-us6", base_url=url)
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member(LIST, "a@example.com", status_if_new="subscribed", merge_fields={})
    e = ei.value
    assert e.status_code == 401 and e.title == "API Key Invalid" and "API key" in e.detail
    assert e.type == "https://mailchimp.com/developer/marketing/docs/errors/" and e.instance
    assert e.retry_after is None
    assert app.state.members == {}


async def test_unknown_list_is_404(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    _, url = fake
    mc = MailchimpClient(http, API_KEY, base_url=url)
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member("nope", "a@example.com", status_if_new="subscribed", merge_fields={})
    assert ei.value.status_code == 404 and ei.value.title == "Resource Not Found"


async def test_invalid_resource_is_400_with_field_errors(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    _, url = fake
    mc = MailchimpClient(http, API_KEY, base_url=url)
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member(LIST, "a@example.com", status_if_new="maybe", merge_fields={})
    assert ei.value.status_code == 400 and ei.value.title == "Invalid Resource"
    assert ei.value.errors[0]["field"] == "status_if_new"
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member(LIST, "not-an-email", status_if_new="subscribed", merge_fields={})
    assert ei.value.status_code == 400
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member(LIST, "a@example.com", status_if_new="subscribed",
                               merge_fields={"ADDRESS": {"addr1": "1 Main St"}})
    assert ei.value.errors == [{"field": "ADDRESS", "message": "Please enter a complete address"}]


async def test_fake_rejects_malformed_raw_calls(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    """The fake must catch client bugs: a hash that does not match, non-object merge fields."""
    _, url = fake
    auth = ("x", API_KEY)
    r = await http.put(f"{url}/lists/{LIST}/members/{'0' * 32}", auth=auth,
                       json={"email_address": "a@example.com", "status_if_new": "subscribed"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["title"] == "Invalid Resource"
    h = hashlib.md5(b"a@example.com").hexdigest()
    r = await http.put(f"{url}/lists/{LIST}/members/{h}", auth=auth,
                       json={"email_address": "a@example.com", "status_if_new": "subscribed", "merge_fields": []})
    assert r.status_code == 400
    r = await http.put(f"{url}/lists/{LIST}/members/{h}", auth=auth, json={"status_if_new": "subscribed"})
    assert r.status_code == 400
    r = await http.post(f"{url}/lists/{LIST}/members/{h}/tags", auth=auth, json={"tags": [{"name": "x"}]})
    assert r.status_code == 404  # no such member yet
    r = await http.put(f"{url}/lists/{LIST}/members/{h}", json={"email_address": "a@example.com"})
    assert r.status_code == 401 and r.json()["title"] == "API Key Missing"


async def test_server_errors_surface_status_and_retry_after(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    app, url = fake
    mc = MailchimpClient(http, API_KEY, base_url=url)
    app.state.fail_next = [500, 429]
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member(LIST, "a@example.com", status_if_new="subscribed", merge_fields={})
    assert ei.value.status_code == 500 and ei.value.retry_after is None
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member(LIST, "a@example.com", status_if_new="subscribed", merge_fields={})
    assert ei.value.status_code == 429 and ei.value.retry_after == "2"
    assert ei.value.title == "Too Many Requests"
    res = await mc.upsert_member(LIST, "a@example.com", status_if_new="subscribed", merge_fields={})
    assert res.status_code == 200


async def test_tags_failure_raises(fake: tuple[Any, str], http: httpx.AsyncClient) -> None:
    app, url = fake
    mc = MailchimpClient(http, API_KEY, base_url=url)
    app.state.fail_next = [None, 503]  # the PUT passes, the tags POST fails
    with pytest.raises(ProviderError) as ei:
        await mc.upsert_member(LIST, "a@example.com", status_if_new="subscribed", merge_fields={}, tags=["x"])
    assert ei.value.status_code == 503
    assert [c["method"] for c in app.state.calls] == ["PUT", "POST"]
    assert (LIST, subscriber_hash("a@example.com")) in app.state.members


async def test_invalid_list_id_refused(http: httpx.AsyncClient) -> None:
    mc = MailchimpClient(http, API_KEY, base_url="http://127.0.0.1:9/3.0")
    for bad in ("", "../x", "a/b", "a?b", ".."):
        with pytest.raises(ValueError):
            await mc.upsert_member(bad, "a@example.com", status_if_new="subscribed", merge_fields={})


@pytest.mark.parametrize(
    ("contact", "consent", "expected"),
    [
        (
            {"email": "a@x.io", "first_name": "Ann", "last_name": "Lee", "phone": "+4511111111",
             "mobile": "+4522222222", "date_of_birth": "1985-03-09", "interests": ["ski", "golf", "ski"],
             "address": {"line1": "1 Main", "line2": "Apt 2", "city": "Oslo", "state": "OS", "zip": "0150",
                         "country": "NO"}},
            {"email": True},
            {"email": "a@x.io", "status_if_new": "subscribed", "tags": ["ski", "golf"],
             "merge_fields": {"FNAME": "Ann", "LNAME": "Lee", "PHONE": "+4511111111", "BIRTHDAY": "03/09",
                              "ADDRESS": {"addr1": "1 Main", "addr2": "Apt 2", "city": "Oslo", "state": "OS",
                                          "zip": "0150", "country": "NO"}}},
        ),
        (
            {"email": "b@x.io", "mobile": "+4522222222", "first_name": "  ", "date_of_birth": "12-31-1990"},
            {"email": False},
            {"email": "b@x.io", "status_if_new": "unsubscribed", "status": "unsubscribed", "tags": [],
             "merge_fields": {"PHONE": "+4522222222"}},
        ),
        (
            {"email": "c@x.io", "address": {"line1": "1 Main", "city": "Oslo"}, "interests": None},
            {},
            {"email": "c@x.io", "status_if_new": "transactional", "tags": [], "merge_fields": {}},
        ),
        (
            {"email": "d@x.io", "address": {"line1": "1 Main", "city": "Oslo", "state": "OS", "zip": "0150"}},
            {"email": None, "sms": True},
            {"email": "d@x.io", "status_if_new": "transactional", "tags": [],
             "merge_fields": {"ADDRESS": {"addr1": "1 Main", "city": "Oslo", "state": "OS", "zip": "0150"}}},
        ),
    ],
    ids=["full-opt-in", "opt-out-mobile-fallback", "unknown-consent-incomplete-address", "address-no-country"],
)
def test_contact_to_member(contact: dict[str, Any], consent: dict[str, bool | None], expected: dict[str, Any]) -> None:
    assert contact_to_member(contact, consent) == expected


def test_contact_without_email_refused() -> None:
    with pytest.raises(ValueError):
        contact_to_member({"phone": "+4511111111"}, {"email": True})
