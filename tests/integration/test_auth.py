"""Request authentication against real senders: every scheme, allowlists, headers, rate limits,
rotation. Signatures come from the providers' own libraries (standardwebhooks, stripe) or are
computed exactly as the providers document them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
import stripe

from tests.fakes.receiver import Receiver

BODY = b'{"id":"evt_1","type":"order.created","data":{"email":"a@b.co"}}'


def _sign(scheme: str, secret: str, body: bytes, *, ts: int | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    if scheme == "standard":
        sig = standardwebhooks.Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
        return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
    if scheme == "stripe":
        return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body.decode(), secret, ts)}
    mac = lambda msg: hmac.new(secret.encode(), msg, hashlib.sha256)  # noqa: E731
    if scheme == "github":
        return {"X-Hub-Signature-256": "sha256=" + mac(body).hexdigest(), "X-GitHub-Delivery": msg_id}
    if scheme == "shopify":
        return {"X-Shopify-Hmac-Sha256": base64.b64encode(mac(body).digest()).decode()}
    if scheme == "woocommerce":
        return {"X-WC-Webhook-Signature": base64.b64encode(mac(body).digest()).decode()}
    if scheme == "slack":
        return {"X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": "v0=" + mac(f"v0:{ts}:".encode() + body).hexdigest()}
    if scheme == "hmac":
        return {"X-Signature": "sha512=" + hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()}
    raise AssertionError(scheme)


SCHEMES = ["standard", "github", "stripe", "shopify", "woocommerce", "slack", "hmac"]
TIMED = {"standard", "stripe", "slack"}


def _source(live, scheme: str, secret: str | None = None):  # type: ignore[no-untyped-def]
    sig = {"scheme": scheme}
    if scheme == "hmac":
        sig.update(header="X-Signature", algorithm="sha512", encoding="hex", prefix="sha512=")
    body = {"config": {"signature": sig}}
    if secret:
        body["secret"] = secret
    return live.create_source(**body)


def _secret_for(scheme: str) -> str:
    if scheme == "standard":
        return "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    return "provider-secret-" + scheme


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signature_scheme(live, scheme: str) -> None:  # type: ignore[no-untyped-def]
    secret = _secret_for(scheme)
    src = _source(live, scheme, secret)
    assert src["secret"] is None and src["signing_secrets"] == 1  # a given secret is never echoed
    url = f"/V1/Data/{src['token']}"
    post = lambda body, headers: live.client.post(url, content=body, headers={  # noqa: E731
        "Content-Type": "application/json", **headers})

    ok = post(BODY, _sign(scheme, secret, BODY))
    assert ok.status_code == 200, ok.text
    flipped = BODY.replace(b"a@b.co", b"a@b.cp")
    assert post(flipped, _sign(scheme, secret, BODY)).status_code == 401
    assert post(BODY, _sign(scheme, secret + "x" if scheme != "standard" else _secret_for("hmac"), BODY)
                ).status_code in (401,)
    assert post(BODY, {}).status_code == 401
    if scheme in TIMED:
        old = _sign(scheme, secret, BODY, ts=int(time.time()) - 600, msg_id="msg_old")
        r = post(BODY, old)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    rejected = live.client.get("/api/v1/requests", params={"verdict": "rejected"},
                               headers={"Authorization": "Bearer test-admin-token"}).json()["items"]
    assert rejected and {i["rule"] for i in rejected} == {"signature"}
    # the error never says which secret was close
    assert secret not in post(BODY, _sign(scheme, secret + "y", BODY)).text


def test_standard_webhooks_replay_and_redelivery(live) -> None:  # type: ignore[no-untyped-def]
    secret = _secret_for("standard")
    src = _source(live, "standard", secret)
    url = f"/V1/Data/{src['token']}"
    h = _sign("standard", secret, BODY, msg_id="msg_42")
    first = live.client.post(url, content=BODY, headers=h)
    again = live.client.post(url, content=BODY, headers=h)
    assert first.status_code == again.status_code == 200
    assert again.json()["request_id"] == first.json()["request_id"]
    stale = _sign("standard", secret, BODY, ts=int((datetime.now(UTC) - timedelta(minutes=6)).timestamp()),
                  msg_id="msg_43")
    assert live.client.post(url, content=BODY, headers=stale).status_code == 401


def test_generated_secret_is_shown_once_and_works(live) -> None:  # type: ignore[no-untyped-def]
    src = _source(live, "standard")
    secret = src["secret"]
    assert secret.startswith("whsec_")
    with live.admin() as c:
        shown = c.get(f"/api/v1/sources/{src['id']}").json()
        assert shown["secret"] is None and secret not in c.get("/api/v1/sources").text
        assert secret not in c.get("/api/v1/openapi.json").text
    r = live.client.post(f"/V1/Data/{src['token']}", content=BODY, headers=_sign("standard", secret, BODY))
    assert r.status_code == 200


def test_rotation_keeps_old_secret_for_grace_period(live) -> None:  # type: ignore[no-untyped-def]
    src = _source(live, "github", "old-secret-123")
    url = f"/V1/Data/{src['token']}"
    with live.admin() as c:
        r = c.post(f"/api/v1/sources/{src['id']}/rotate", json={"secret": "new-secret-456", "grace_seconds": 3600})
        assert r.status_code == 200 and r.json()["signing_secrets"] == 2
    for s in ("old-secret-123", "new-secret-456"):
        assert live.client.post(url, content=BODY, headers=_sign("github", s, BODY)).status_code == 200
    with live.admin() as c:
        r = c.post(f"/api/v1/sources/{src['id']}/rotate", json={"grace_seconds": 0})
        new = r.json()["secret"]
        assert new and r.json()["signing_secrets"] == 1
    assert live.client.post(url, content=BODY, headers=_sign("github", "new-secret-456", BODY)).status_code == 401
    assert live.client.post(url, content=BODY, headers=_sign("github", new, BODY)).status_code == 200


def test_woocommerce_ping_is_accepted(live) -> None:  # type: ignore[no-untyped-def]
    src = _source(live, "woocommerce", "wc-secret-1234")
    url = f"/V1/Data/{src['token']}"
    ping = live.client.post(url, content=b"webhook_id=17",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert ping.status_code == 200
    not_ping = live.client.post(url, content=b"webhook_id=17&x=1",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert not_ping.status_code == 401


def test_ip_allowlist_and_trusted_proxies(live_server_factory, db_url: str) -> None:  # type: ignore[no-untyped-def]
    plain = live_server_factory(db_url)
    src = plain.create_source(config={"allow_ips": ["10.0.0.0/8", "2001:db8::/32"]})
    url = f"/V1/Data/{src['token']}"
    r = plain.client.post(url, json={}, headers={"X-Forwarded-For": "10.1.2.3"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"  # XFF not trusted by default
    local = plain.create_source(config={"allow_ips": ["127.0.0.0/8"]})
    assert plain.client.post(f"/V1/Data/{local['token']}", json={}).status_code == 200

    proxied = live_server_factory(db_url, trusted_proxies="127.0.0.1/32")
    src2 = proxied.create_source(config={"allow_ips": ["10.0.0.0/8", "2001:db8::/32"]})
    url2 = f"/V1/Data/{src2['token']}"
    assert proxied.client.post(url2, json={}, headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200
    assert proxied.client.post(url2, json={}, headers={"Forwarded": 'for="[2001:db8::1]:443"'}).status_code == 200
    assert proxied.client.post(url2, json={}, headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 403
    # a client cannot smuggle an allowed address in front of its real one
    spoof = proxied.client.post(url2, json={}, headers={"X-Forwarded-For": "10.1.2.3, 192.0.2.1"})
    assert spoof.status_code == 403
    with proxied.admin() as c:
        items = c.get("/api/v1/requests", params={"source": src2["id"]}).json()["items"]
    assert {i["peer"] for i in items if i["verdict"] == "accepted"} == {"10.1.2.3", "2001:db8::1"}
    assert {i["rule"] for i in items if i["verdict"] == "rejected"} == {"ip_allowlist"}


def test_required_headers_and_methods(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"required_headers": {"X-Shop": "acme-1"}, "methods": ["POST", "PUT"]})
    url = f"/V1/Data/{src['token']}"
    assert live.client.post(url, json={}).status_code == 403
    assert live.client.post(url, json={}, headers={"X-Shop": "acme-2"}).status_code == 403
    assert live.client.put(url, json={}, headers={"X-Shop": "acme-1"}).status_code == 200
    assert live.client.patch(url, json={}, headers={"X-Shop": "acme-1"}).status_code == 405


def test_rate_limit(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"rate": 0.5, "burst": 3})
    url = f"/V1/Data/{src['token']}"
    codes = [live.client.post(url, json={"n": i}).status_code for i in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = live.client.post(url, json={})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    other = live.create_source()
    assert live.client.post(f"/V1/Data/{other['token']}", json={}).status_code == 200


def test_api_key_rotation_and_redaction(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(api_key=True)
    key = src["api_key"]
    url = f"/V1/Data/{src['token']}"
    r = live.client.post(url + f"?api-key={key}&x=1", json={})
    assert r.status_code == 200
    with live.admin() as c:
        detail = c.get(f"/api/v1/requests/{r.json()['request_id']}").json()
        assert key not in detail["query"] and "x=1" in detail["query"]
        new = c.patch(f"/api/v1/sources/{src['id']}", json={"rotate_api_key": True}).json()["api_key"]
    assert new and new != key
    assert live.client.post(url, json={}, headers={"X-API-Key": key}).status_code == 401
    ok = live.client.post(url, json={}, headers={"X-API-Key": new})
    assert ok.status_code == 200
    with live.admin() as c:
        hdrs = dict(c.get(f"/api/v1/requests/{ok.json()['request_id']}").json()["headers"])
    assert hdrs["x-api-key"] == "[redacted]"


@pytest.mark.parametrize("sent", ["acme-1x", "acme-10", "acme-", "acme", "", "xacme-1", "ACME-1"])
def test_required_header_must_match_exactly(live, sent: str) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 row 2: a required header compared with ``startswith`` (either way round) lets a
    longer or shorter value through. Only the exact value passes."""
    src = live.create_source(config={"required_headers": {"X-Shop": "acme-1"}})
    url = f"/V1/Data/{src['token']}"
    r = live.client.post(url, json={}, headers={"X-Shop": sent})
    assert r.status_code == 403, (sent, r.text)
    assert r.json()["error"]["detail"] == {"header": "x-shop"}
    assert live.client.post(url, json={}, headers={"X-Shop": "acme-1"}).status_code == 200


def test_woocommerce_ping_is_stored_and_never_processed(live) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 row 16: WooCommerce's unsigned save-time ping is logged as a ping, never parsed into
    a record and never runs the source's actions. A signed event sent after it is processed first
    in line behind it, so by then the worker has had every chance to pick the ping up."""
    receiver = Receiver().start()
    try:
        src = live.create_source(
            config={"signature": {"scheme": "woocommerce"}, "allow_private_destinations": True,
                    "actions": [{"type": "forward", "url": receiver.url + "/hook"}]},
            secret="wc-secret-1234")
        url = f"/V1/Data/{src['token']}"
        ping = live.client.post(url, content=b"webhook_id=17", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert ping.status_code == 200, ping.text
        ping_id = ping.json()["request_id"]
        event = live.client.post(url, content=BODY, headers={"Content-Type": "application/json",
                                                             **_sign("woocommerce", "wc-secret-1234", BODY)})
        assert event.status_code == 200, event.text
        assert live.wait_state(event.json()["request_id"])["state"] == "processed"
        assert live.wait_state(ping_id, states=("ping", "processed", "failed"))["state"] == "ping"
        with live.admin() as c:
            deadline = time.monotonic() + 10
            while len(c.get("/api/v1/deliveries").json()["items"]) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            detail = c.get(f"/api/v1/requests/{ping_id}").json()
            deliveries = c.get("/api/v1/deliveries").json()["items"]
        assert detail["state"] == "ping" and detail["records"] == []
        assert [d["request_id"] for d in deliveries] == [event.json()["request_id"]]
        assert all(b"webhook_id" not in r.body for r in receiver.received)
    finally:
        receiver.stop()


def test_an_api_key_in_the_query_is_checked_and_the_header_wins(live) -> None:  # type: ignore[no-untyped-def]
    """Issue #19 (mutation run): a key given in the query is compared like one in the header, and
    when both are sent the header's decides. The refusal says what is missing."""
    src = live.create_source(api_key=True)
    key, url = src["api_key"], f"/V1/Data/{src['token']}"
    wrong = live.client.post(url + "?api-key=wrong&x=1", json={})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "Missing or invalid API key"
    assert live.client.post(url + f"?x=1&api-key={key}", json={}).status_code == 200
    assert live.client.post(url + "?api-key=wrong", json={}, headers={"X-API-Key": key}).status_code == 200
    assert live.client.post(url + f"?api-key={key}", json={}, headers={"X-API-Key": "wrong"}).status_code == 401


def test_a_bad_signature_answer_names_the_reason(live) -> None:  # type: ignore[no-untyped-def]
    src = live.create_source(config={"signature": {"scheme": "github"}}, secret="s3cret-github")
    r = live.client.post(f"/V1/Data/{src['token']}", content=BODY,
                         headers={"X-Hub-Signature-256": "sha256=" + "00" * 32, "Content-Type": "application/json"})
    assert r.status_code == 401
    err = r.json()["error"]
    assert (err["message"], err["detail"]) == ("Invalid signature", {"reason": "mismatch"})
