"""Answers the sender expects (issue #15): a per-source response (2xx, content type, sandboxed
template) with the ``salesforce-ack`` preset, and verification handshakes — each written from the
provider's documentation, answered only after the source's own checks, stored with state
``handshake`` and never processed."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from xml.etree import ElementTree

import orjson
import pytest

from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _requests(live: Any, source_id: str) -> list[dict[str, Any]]:
    with live.admin() as c:
        r = c.get("/api/v1/requests", params={"source": source_id})
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]


def _receipt(live: Any, rid: str) -> dict[str, Any]:
    return live.client.get(f"/V1/Requests/{rid}", headers=ADMIN).json()  # type: ignore[no-any-return]


# An outbound message as Salesforce sends it: the notifications() call of the outbound messaging WSDL
# ("Understanding the Outbound Messaging WSDL", Salesforce SOAP API Developer Guide), one Contact
# notification, sent with Content-Type text/xml and an empty SOAPAction.
SALESFORCE_ENVELOPE = b"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D5e000000abcdEAA</OrganizationId>
   <ActionId>04k5e000000XyZ1AAK</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/00D5e000000abcd</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/00D5e000000abcd</PartnerUrl>
   <Notification>
    <Id>04l5e00000AbCdEAAV</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>0035e00000XyZ12AAB</sf:Id>
     <sf:Email>ann@example.com</sf:Email>
     <sf:FirstName>Ann</sf:FirstName>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"""
SOAP_NS = "{http://schemas.xmlsoap.org/soap/envelope/}"
OUT_NS = "{http://soap.sforce.com/2005/09/outbound}"


def test_salesforce_ack_preset(live: Any) -> None:
    src = live.create_source(config={"format": "xml", "response": {"preset": "salesforce-ack"}})
    r = live.client.post(f"/V1/Data/{src['token']}", content=SALESFORCE_ENVELOPE,
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(r.content)
    assert root.tag == f"{SOAP_NS}Envelope"
    ack = root.find(f"{SOAP_NS}Body/{OUT_NS}notificationsResponse/{OUT_NS}Ack")
    assert ack is not None and ack.text == "true"
    rid = r.headers["x-request-id"]
    receipt = live.wait_state(rid)
    assert receipt["state"] == "processed"
    assert b"ann@example.com" in orjson.dumps(receipt["records"])
    # a rejected request still gets the JSON error, never an Ack (Salesforce must retry it)
    bad = live.client.post(f"/V1/Data/{src['token']}", content=b"{}", headers={"Content-Type": "application/json"})
    assert bad.status_code == 415 and bad.json()["error"]["code"]


def test_custom_template_response(live: Any) -> None:
    src = live.create_source(name="shop-form", config={"response": {
        "status": 202, "content_type": "text/plain; charset=utf-8",
        "body": "ok {{ request_id }} {{ source.name }} {{ received_at[:4] }}{{ ''.__class__ }}{{ settings }}"}})
    r = live.client.post(f"/V1/Data/{src['token']}", json={"a": 1}, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 202 and r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-security-policy"].startswith("sandbox")  # never a live page on hookbay's origin
    rid = r.headers["x-request-id"]
    assert r.text == f"ok {rid} shop-form {time.gmtime().tm_year}"
    again = live.client.post(f"/V1/Data/{src['token']}", json={"a": 1}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202 and again.text == r.text  # a duplicate names the original


@pytest.mark.parametrize("response, problem", [
    ({"status": 302}, "2xx"),
    ({"status": 500}, "2xx"),
    ({"body": "{{ unclosed"}, "template"),
    ({"body": "x" * 9000}, "long"),
    ({"content_type": "text/html\r\nSet-Cookie: a=b"}, "content type"),
    ({"preset": "salesforce-ack", "body": "x"}, "preset"),
])
def test_unsafe_responses_are_refused(live: Any, response: dict[str, Any], problem: str) -> None:
    with live.admin() as c:
        r = c.post("/api/v1/sources", json={"name": "r", "client_id": "acme", "config": {"response": response}})
    assert r.status_code == 422, (problem, r.text)


# --- handshakes ----------------------------------------------------------------------------------

def _only_handshakes(live: Any, source_id: str, n: int) -> None:
    time.sleep(0.3)
    items = _requests(live, source_id)
    assert [(i["verdict"], i["state"]) for i in items] == [("accepted", "handshake")] * n
    for i in items:
        assert _receipt(live, i["id"])["records"] == []


def _slack_sign(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = ts or int(time.time())
    sig = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={sig}"}


def test_slack_url_verification(live: Any) -> None:
    # Slack Events API, "url_verification event": a signed POST whose JSON names the challenge;
    # respond with the challenge (plain text is one of the documented forms).
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    src = live.create_source(config={"handshake": {"type": "slack"}, "signature": {"scheme": "slack"}},
                             secret=secret)
    body = orjson.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
                         "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                         "type": "url_verification"})
    url = f"/V1/Data/{src['token']}"
    r = live.client.post(url, content=body, headers={"Content-Type": "application/json", **_slack_sign(secret, body)})
    assert r.status_code == 200 and r.text == "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    assert r.headers["content-type"].startswith("text/plain") and r.headers["x-content-type-options"] == "nosniff"
    unsigned = live.client.post(url, content=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and "3eZbrw" not in unsigned.text
    ev = orjson.dumps({"type": "event_callback", "event": {"type": "app_mention", "text": "hi"}})
    normal = live.client.post(url, content=ev, headers={"Content-Type": "application/json", **_slack_sign(secret, ev)})
    assert normal.status_code == 200 and normal.json()["status"] == "accepted"
    live.wait_state(normal.json()["request_id"])
    states = {i["id"]: i["state"] for i in _requests(live, src["id"])}
    assert states[r.headers["x-request-id"]] == "handshake"
    assert states[normal.json()["request_id"]] == "processed"
    assert sorted(states.values()) == ["handshake", "processed", "rejected"]


def test_meta_verification(live: Any) -> None:
    # Meta Graph API Webhooks, "Verification Requests": GET with hub.mode=subscribe, hub.challenge and
    # hub.verify_token; answer hub.challenge when the token matches what the app dashboard was given.
    src = live.create_source(config={"handshake": {"type": "meta", "verify_token": "meatyhamhock"},
                                     "allow_ips": ["127.0.0.0/8"]})
    url = f"/V1/Data/{src['token']}"
    q = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "meatyhamhock"}
    r = live.client.get(url, params=q)
    assert r.status_code == 200 and r.text == "1158201444"
    wrong = live.client.get(url, params={**q, "hub.verify_token": "guess"})
    assert wrong.status_code == 403 and "1158201444" not in wrong.text
    plain_get = live.client.get(url)
    assert plain_get.status_code == 405  # GET is for the handshake only
    items = _requests(live, src["id"])
    assert sorted((i["state"], i["rule"]) for i in items) == [("handshake", None), ("rejected", "handshake"),
                                                              ("rejected", "method")]


def test_meta_verification_after_the_allowlist(live: Any) -> None:
    src = live.create_source(config={"handshake": {"type": "meta", "verify_token": "t0ken"},
                                     "allow_ips": ["192.0.2.0/24"]})
    r = live.client.get(f"/V1/Data/{src['token']}",
                        params={"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "t0ken"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_msgraph_validation(live: Any) -> None:
    # Microsoft Graph change notifications, "Notification endpoint validation": POST
    # ?validationToken=<url-encoded>, no body; reply 200 text/plain with the decoded token within 10 s.
    src = live.create_source(config={"handshake": {"type": "msgraph"}, "format": "json"})
    token = "Validation: Testing client application reachability for subscription Request-Id: 3b3f9821-ce3f-4d42"
    r = live.client.post(f"/V1/Data/{src['token']}", params={"validationToken": token},
                         headers={"Content-Type": "text/plain; charset=utf-8"})
    assert r.status_code == 200 and r.text == token and r.headers["content-type"].startswith("text/plain")
    _only_handshakes(live, src["id"], 1)


def test_zoom_url_validation(live: Any) -> None:
    # Zoom Webhooks, "Validate your webhook endpoint": event endpoint.url_validation with payload.plainToken;
    # answer {"plainToken", "encryptedToken": HMAC-SHA256(secret token, plainToken) hex}. The request is
    # signed like every Zoom event (x-zm-signature: v0=HMAC(secret, "v0:{timestamp}:{body}")).
    secret = "hz7Yc1cFQs2Q3dS8aXCxkA"
    src = live.create_source(config={"handshake": {"type": "zoom"}}, secret=secret)
    body = orjson.dumps({"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1654503849680,
                         "event": "endpoint.url_validation"})
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    url = f"/V1/Data/{src['token']}"
    r = live.client.post(url, content=body, headers={"Content-Type": "application/json",
                                                     "x-zm-request-timestamp": ts, "x-zm-signature": sig})
    assert r.status_code == 200, r.text
    assert r.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw",
                        "encryptedToken": hmac.new(secret.encode(), b"qgg8vlvZRS6UYooatFL8Aw",
                                                   hashlib.sha256).hexdigest()}
    forged = live.client.post(url, content=body, headers={"Content-Type": "application/json",
                                                          "x-zm-request-timestamp": ts, "x-zm-signature": "v0=00"})
    assert forged.status_code == 401 and "encryptedToken" not in forged.text


def test_dropbox_challenge(live: Any) -> None:
    # Dropbox webhooks, "Verification request": GET ?challenge=...; echo it with
    # Content-Type text/plain and X-Content-Type-Options: nosniff.
    src = live.create_source(config={"handshake": {"type": "dropbox"}})
    r = live.client.get(f"/V1/Data/{src['token']}", params={"challenge": "<script>alert(1)</script>"})
    assert r.status_code == 200 and r.text == "<script>alert(1)</script>"
    assert r.headers["content-type"].startswith("text/plain") and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"].startswith("sandbox")
    _only_handshakes(live, src["id"], 1)
