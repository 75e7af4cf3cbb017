"""Source changes never silently weaken security: PATCH is JSON Merge Patch (RFC 7396), PUT
replaces the whole definition but refuses to drop a check it does not name. Real HTTP, real
GitHub-style signatures, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac

import orjson

from hookbay.changes import merge_patch

SECRET = "s3cret-github-hook"


def _signed(body: bytes) -> dict[str, str]:
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={sig}", "Content-Type": "application/json"}


def _github_source(live):  # type: ignore[no-untyped-def]
    return live.create_source(name="repo", client_id="acme", secret=SECRET,
                              config={"signature": {"scheme": "github"}, "allow_ips": ["127.0.0.0/8"]})


def test_patch_changes_only_what_it_names(live) -> None:  # type: ignore[no-untyped-def]
    src = _github_source(live)
    url = f"/V1/Data/{src['token']}"
    with live.admin() as c:
        r = c.patch(f"/api/v1/sources/{src['id']}", json={"config": {"rate": 5}})
        assert r.status_code == 200, r.text
        cfg = c.get(f"/api/v1/sources/{src['id']}").json()["config"]
    assert cfg["rate"] == 5
    assert cfg["signature"]["scheme"] == "github" and cfg["allow_ips"] == ["127.0.0.0/8"]
    body = b'{"a": 1}'
    assert live.client.post(url, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    assert live.client.post(url, content=body, headers=_signed(body)).status_code == 200


def test_patch_null_removes_a_check_explicitly(live) -> None:  # type: ignore[no-untyped-def]
    src = _github_source(live)
    with live.admin() as c:
        r = c.patch(f"/api/v1/sources/{src['id']}", json={"config": {"signature": None}})
        assert r.status_code == 200, r.text
        assert r.json()["config"]["signature"] is None
        assert r.json()["config"]["allow_ips"] == ["127.0.0.0/8"]
        assert c.patch(f"/api/v1/sources/{src['id']}", json={"name": "renamed"}).json()["config"]["allow_ips"]
    r = live.client.post(f"/V1/Data/{src['token']}", json={"a": 1})
    assert r.status_code == 200


def test_patch_errors_use_the_error_shape(live) -> None:  # type: ignore[no-untyped-def]
    src = _github_source(live)
    with live.admin() as c:
        bad = c.patch(f"/api/v1/sources/{src['id']}", json={"config": {"rate": -1}})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        assert any("rate" in d["path"] for d in bad.json()["error"]["detail"])
        junk = c.patch(f"/api/v1/sources/{src['id']}", content=b"{nope", headers={"Content-Type": "application/json"})
        assert junk.status_code == 400 and junk.json()["error"]["code"] == "bad_request"
        unknown = c.patch(f"/api/v1/sources/{src['id']}", json={"colour": "red"})
        assert unknown.status_code == 422
        # nothing changed by the refused patches
        assert c.get(f"/api/v1/sources/{src['id']}").json()["config"]["signature"]["scheme"] == "github"


def test_put_refuses_to_drop_a_check_it_does_not_name(live) -> None:  # type: ignore[no-untyped-def]
    src = _github_source(live)
    with live.admin() as c:
        r = c.put(f"/api/v1/sources/{src['id']}", json={"name": "repo", "config": {"rate": 5}})
        assert r.status_code == 409, r.text
        paths = {d["path"] for d in r.json()["error"]["detail"]}
        assert paths == {"config.signature", "config.allow_ips"}
        assert c.get(f"/api/v1/sources/{src['id']}").json()["config"]["signature"]["scheme"] == "github"
        ok = c.put(f"/api/v1/sources/{src['id']}", json={
            "name": "repo", "config": {"rate": 5, "signature": None, "allow_ips": []}})
        assert ok.status_code == 200, ok.text
        cfg = ok.json()["config"]
        assert cfg["signature"] is None and cfg["allow_ips"] == [] and cfg["rate"] == 5
        keep = c.put(f"/api/v1/sources/{src['id']}", json={"name": "repo2", "config": {"parser": "contact"}})
        assert keep.status_code == 200 and keep.json()["config"]["rate"] is None  # PUT replaces


def test_merge_patch_follows_rfc_7396() -> None:
    """The RFC's own examples (appendix A)."""
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}), ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}), ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}), ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}), (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]), ({"a": "foo"}, None, None), ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}), ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, want in cases:
        assert merge_patch(orjson.loads(orjson.dumps(target)), patch) == want, (target, patch)
