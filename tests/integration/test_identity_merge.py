"""Identity: a contact bringing a second key to a profile, and a contact whose keys belong to two
profiles, over real HTTP on SQLite and PostgreSQL (issue #12's reproduction, step by step)."""

from __future__ import annotations

import orjson


def _contact(live, src, **fields):  # type: ignore[no-untyped-def]
    body = {"SourceName": "s", "SourceType": "t", **fields}
    return live.client.post(f"/V1/Data/{src['token']}", json=body, params={"wait": "1"})


def _admin(live, method, path, **kw):  # type: ignore[no-untyped-def]
    with live.admin() as c:
        return c.request(method, path, **kw)


def test_new_key_joins_profile_then_two_profiles_merge(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(name="contacts", client_id="acme", config={"parser": "contact"})
    r1 = _contact(live, src, Email="p1@x.co", Phone="+13035550199")
    assert r1.status_code == 200, r1.text
    r2 = _contact(live, src, Email="p2@x.co", Phone="+13035550199")  # today: 500 text/plain
    assert r2.status_code == 200, r2.text
    r3 = _contact(live, src, Email="P1@X.CO", Phone="+13035550777")
    assert r3.status_code == 200, r3.text
    first = _admin(live, "GET", "/api/v1/profiles", params={"email": "p1@x.co"}).json()
    assert len(first) == 1
    p1 = first[0]["id"]
    # p2@x.co joined p1's profile through the shared phone: one person, three keys.
    assert [p["id"] for p in _admin(live, "GET", "/api/v1/profiles", params={"email": "p2@x.co"}).json()] == [p1]
    prof = _admin(live, "GET", f"/api/v1/profiles/{p1}").json()
    assert {(k["kind"], k["value"]) for k in prof["keys"]} == {
        ("email", "p1@x.co"), ("email", "p2@x.co"), ("phone", "+13035550199"), ("phone", "+13035550777")}

    # A fourth key makes a second profile; then one contact names keys of both: they merge.
    r4 = _contact(live, src, Email="p3@x.co", Phone="+13035550888", FirstName="Ann")
    assert r4.status_code == 200
    p3 = _admin(live, "GET", "/api/v1/profiles", params={"email": "p3@x.co"}).json()[0]["id"]
    assert p3 != p1
    r5 = _contact(live, src, Email="p3@x.co", Phone="+13035550199", LastName="Lee")
    assert r5.status_code == 200, r5.text
    survivor = _admin(live, "GET", f"/api/v1/profiles/{p1}").json()
    assert survivor["id"] == p1  # the older profile survives
    assert p3 in survivor["merged_from"]
    assert survivor["fields"]["first_name"]["value"] == "Ann"
    assert survivor["fields"]["last_name"]["value"] == "Lee"
    assert ("email", "p3@x.co") in {(k["kind"], k["value"]) for k in survivor["keys"]}
    assert set(survivor["request_ids"]) >= {r4.json()["request_id"], r5.json()["request_id"]}
    # The merged-away id answers the survivor.
    old = _admin(live, "GET", f"/api/v1/profiles/{p3}")
    assert old.status_code == 200 and old.json()["id"] == p1
    # Erasing the survivor erases what was merged into it.
    assert _admin(live, "DELETE", f"/api/v1/profiles/{p1}").status_code in (200, 204)
    assert _admin(live, "GET", f"/api/v1/profiles/{p3}").status_code == 404
    assert _admin(live, "GET", "/api/v1/profiles", params={"email": "p3@x.co"}).json() == []


def test_merge_without_wait_never_stalls_others(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(name="contacts", client_id="acme", config={"parser": "contact"})
    ids = []
    for i in range(30):
        body = {"SourceName": "s", "SourceType": "t", "Email": f"u{i % 7}@x.co", "Phone": f"+1303555{i % 5:04d}"}
        r = live.client.post(f"/V1/Data/{src['token']}", content=orjson.dumps(body),
                             headers={"content-type": "application/json"})
        assert r.status_code == 200
        ids.append(r.json()["request_id"])
    for rid in ids:
        assert live.wait_state(rid)["state"] == "processed"
    # 7 emails and 5 phones, all linked through i -> (i % 7, i % 5): one person in the end.
    profiles = _admin(live, "GET", "/api/v1/profiles", params={"email": "u0@x.co"}).json()
    assert len(profiles) == 1
    prof = _admin(live, "GET", f"/api/v1/profiles/{profiles[0]['id']}").json()
    assert len([k for k in prof["keys"] if k["kind"] == "email"]) == 7
    assert len([k for k in prof["keys"] if k["kind"] == "phone"]) == 5
