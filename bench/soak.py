#!/usr/bin/env python3
"""Soak: a realistic traffic mix at a steady rate against `hookbay serve`, then invariants.

    .venv/bin/python bench/soak.py [--seconds 300] [--rate 100] [--connections 8] [--db sqlite|postgres]

For --seconds, a steady sender (--connections concurrent connections, requests paced to --rate
req/s) posts a mixed corpus to one client's sources: contacts with overlapping identities
across three contact sources (emails in mixed case, phones in several formats, permissions
true/false/absent, JSON, form-encoded, CSV, `?wait=1`), signed WooCommerce and Shopify orders
through the docs/mappings examples (plus WooCommerce pings and redeliveries), XML orders,
generic CSV/NDJSON/JSON events, and garbage: malformed and oversized bodies, wrong media types,
bad signatures, unknown tokens. SQLite: one `serve` with its worker. PostgreSQL: a fresh
database, `serve` plus a separate `hookbay worker` (two workers).

After the send phase it waits for the queue to drain, stops the server(s) and checks:
0 acknowledged requests missing (every 2xx request id stored with its exact body), 0 pending
after drain, 0 responses 5xx, profiles equal to the reference model's order-independent outcome
(tests/models/identity.py), every failed request has a reason, and every answer and end state is
the one the corpus expects. Prints a markdown report and writes it to
bench/results/soak-<db>-<UTC>.md. Exit status 1 if an invariant fails. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MAPPINGS = ROOT / "docs" / "mappings"
sys.path.insert(0, str(BENCH_DIR))
if str(ROOT) not in sys.path:  # `python bench/soak.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

from run import TargetFailed, free_port, start_server, stop_server, tail  # noqa: E402

HOST = "127.0.0.1"
CLIENT = "soak"
ADMIN_TOKEN = "soak-admin-" + "x" * 24
SECRETS = {"signed": "gh-soak-secret-1", "woo": "wc-soak-secret-1", "shopify": "shpss-soak-secret-1"}
SMALL_MAX_BODY = 64 * 1024  # the "forms" source's body limit, so oversized bodies stay cheap

# ---------------------------------------------------------------- sources

# key -> (name, `source create` flags). Contacts go to "api", "forms" and "signed" (three contact
# sources of one client); "woo" and "shopify" map orders to contacts of the same client, so their
# buyers join the same profiles; "pos" and "events" make plain records.
SOURCES: dict[str, tuple[str, list[str]]] = {
    "api": ("CRM API", ["--parser", "contact", "--format", "json", "--default-region", "US"]),
    "forms": ("Web forms", ["--parser", "contact", "--default-region", "US", "--max-body", str(SMALL_MAX_BODY)]),
    "signed": ("Partner feed", ["--parser", "contact", "--default-region", "US", "--signature", "github",
                                "--secret", SECRETS["signed"]]),
    "woo": ("WooCommerce", ["--mapping", str(MAPPINGS / "woocommerce-order-created.yaml"), "--default-region", "US",
                            "--signature", "woocommerce", "--secret", SECRETS["woo"]]),
    "shopify": ("Shopify", ["--mapping", str(MAPPINGS / "shopify-orders-create.yaml"), "--default-region", "US",
                            "--signature", "shopify", "--secret", SECRETS["shopify"]]),
    "pos": ("POS XML", ["--mapping", str(MAPPINGS / "xml-order-record.yaml")]),
    "events": ("Events", ["--parser", "generic"]),
}
CONTACT_SOURCES = ("api", "forms", "signed", "woo", "shopify")


# ---------------------------------------------------------------- the corpus

FIRST = ["Ann", "Bob", "Cy", "Dana", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lena", "Maya", "Noor", "Otto",
         "Pia", "Quin", "Rosa", "Sam", "Tea"]
LAST = ["Okafor", "Brandt", "Vogel", "Silva", "Nguyen", "Smith", "Kowalski", "Haddad", "Ito", "Moreau"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "shop.example.co"]
CITIES = ["Boston", "Eugene", "Austin", "Denver", "Seattle", "Oslo", "Lima", "Berlin"]
INTERESTS = ["tea", "hiking", "camping", "yoga", "coffee", "cycling", "books", "garden"]
LETTERS = ["weekly", "offers", "news"]
PRODUCTS = ["Organic Cotton Hoodie", "Beeswax Wraps (3-pack)", "Sencha Tea 100 g", "Kettle, 1 l", "Trekking tent",
            "Sleeping mat", "Trail socks"]
AREAS = ["303", "415", "212", "617", "541", "206", "512", "702"]


def phone_text(digits: str, style: int) -> str:
    """A 10-digit US number in one of the ways people write it (all normalise to +1 and the digits)."""
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return [f"+1{digits}", f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"1-{a}-{b}-{c}",
            f"{a}-{b}-{c}", f" +1 ({a}) {b} {c} "][style % 7]


def email_text(email: str, style: int) -> str:
    local, domain = email.split("@")
    return [email, email.upper(), f"{local.capitalize()}@{domain.upper()}", f"  {email}  ",
            f"{local}@{domain.capitalize()}"][style % 5]


@dataclass
class Person:
    n: int
    first: str
    last: str
    email: str
    alt_email: str | None
    phone: str  # 10 digits
    mobile: str
    dob: str


@dataclass
class Item:
    """One request of the corpus and what it should come to."""

    n: int
    kind: str
    source: str | None  # key of SOURCES, None for an unknown token
    body: bytes
    ctype: str | None
    expect_status: int
    expect_state: str | None  # end state of the stored request: processed | failed | ping | duplicate | None
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    chunked: bool = False
    # filled by the sender
    status: int | None = None
    request_id: str | None = None
    latency_ms: float | None = None
    late_ms: float = 0.0
    error: str | None = None
    answer: bytes = b""


# kind -> weight (per 1,000 requests)
MIX: dict[str, int] = {
    "contact_json": 270,
    "contact_wait": 30,
    "contact_signed": 90,
    "contact_form": 70,
    "contact_csv": 30,
    "contact_batch_json": 15,
    "contact_bad_dob": 20,
    "contact_missing_required": 20,
    "contact_no_keys": 10,
    "woo_order": 100,
    "woo_redelivery": 20,
    "woo_ping": 5,
    "shopify_order": 100,
    "xml_order": 50,
    "event_json": 25,
    "event_ndjson": 15,
    "event_csv": 15,
    "malformed_json": 20,
    "malformed_json_untyped": 10,
    "malformed_xml": 10,
    "malformed_csv": 5,
    "wrong_media_type": 10,
    "oversized": 10,
    "bad_signature": 45,
    "unknown_token": 5,
}


class Corpus:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.persons: list[Person] = []
        self.fresh = itertools.count(1_000_000)  # persons used once (batch rows), never reused
        self.kinds = list(MIX)
        self.weights = list(MIX.values())
        self.woo_done: list[Item] = []  # acknowledged WooCommerce orders, for redeliveries
        self.woo_sample = json.loads((MAPPINGS / "woocommerce-order-created.json").read_text())
        self.shop_sample = json.loads((MAPPINGS / "shopify-orders-create.json").read_text())
        self.xml_sample = (MAPPINGS / "xml-order.xml").read_text()

    # -- people

    def _person(self, n: int) -> Person:
        r = random.Random(n * 7919 + 17)
        first, last = r.choice(FIRST), r.choice(LAST)
        dom = r.choice(DOMAINS)
        return Person(
            n=n, first=first, last=last, email=f"{first.lower()}.{last.lower()}{n}@{dom}",
            alt_email=f"{first.lower()[0]}{last.lower()}{n}@work.example.com" if r.random() < 0.25 else None,
            phone=f"{AREAS[n % 8]}{200 + (n // 10_000) % 700:03d}{n % 10_000:04d}",
            mobile=f"{AREAS[(n + 3) % 8]}{900 - (n // 10_000) % 700:03d}{(n * 7) % 10_000:04d}",
            dob=f"{1 + n % 12:02d}-{1 + n % 28:02d}-{1950 + n % 50}",
        )

    def person(self) -> Person:
        """Mostly returning customers, recent ones more often (so two workers meet on one person)."""
        r = self.rng
        if not self.persons or r.random() < 0.25:
            self.persons.append(self._person(len(self.persons)))
            return self.persons[-1]
        if r.random() < 0.5:
            return r.choice(self.persons[-40:])
        return r.choice(self.persons)

    def fresh_person(self) -> Person:
        return self._person(next(self.fresh))

    def other_person(self, p: Person) -> Person | None:
        others = [q for q in self.persons[-200:] if q.n != p.n]
        return self.rng.choice(others) if others else None

    # -- contacts

    def contact_doc(self, p: Person, source_name: str, *, flat: bool = False, link: bool = True) -> dict[str, Any]:
        r = self.rng
        doc: dict[str, Any] = {"SourceName": source_name, "SourceType": r.choice(["Web", "POS", "App", "Import"])}
        use = [r.random() < 0.8, r.random() < 0.5, r.random() < 0.35]
        if not any(use):
            use[r.randrange(3)] = True
        if use[0]:
            email = p.alt_email if p.alt_email and r.random() < 0.3 else p.email
            doc["Email"] = email_text(email, r.randrange(5))
        phone, mobile = p.phone, p.mobile
        if link and r.random() < 0.03:  # a shared number links two people's profiles: a merge
            q = self.other_person(p)
            if q is not None:
                phone = q.phone if r.random() < 0.5 else q.mobile
                use[1] = True
        if use[1]:
            doc["Phone"] = phone_text(phone, r.randrange(7))
        if use[2]:
            doc["Mobile"] = phone_text(mobile, r.randrange(7))
        if r.random() < 0.9:
            doc["FirstName"] = p.first if r.random() < 0.9 else p.first + "ie"
        if r.random() < 0.6:
            doc["LastName"] = p.last
        if r.random() < 0.3:
            doc["DateOfBirth"] = p.dob
        if r.random() < 0.2:
            doc["Gender"] = r.choice(["male", "female", "FEMALE", "other"])
        for perm in ("EmailPermission", "SMSPermission", "PhonePermission", "AddressPermission"):
            v = r.choice([None, None, None, True, False])
            if v is not None:
                doc[perm] = ("true" if v else "false") if flat else v
        if r.random() < 0.4:
            doc["Interests"] = r.sample(INTERESTS, r.randint(1, 2))
        if r.random() < 0.2:
            doc["NewsLetters"] = r.sample(LETTERS, 1)
        if not flat and r.random() < 0.4:
            doc["Address"] = {"City": r.choice(CITIES), "Zip": f"{r.randrange(10_000, 99_999)}", "Country": "US"}
        elif flat and r.random() < 0.3:
            doc["Activities"] = r.choice(["signup", "newsletter", "contest"])
        return doc

    # -- orders

    def woo_order(self, p: Person, n: int) -> dict[str, Any]:
        r = self.rng
        o = json.loads(json.dumps(self.woo_sample))
        o["id"] = o["number"] = 10_000 + n
        o["number"] = str(o["id"])
        o["billing"]["first_name"] = f" {p.first} " if r.random() < 0.2 else p.first
        o["billing"]["last_name"] = p.last
        o["billing"]["email"] = email_text(p.email, r.randrange(5))
        o["billing"]["phone"] = phone_text(p.phone, r.randrange(7)) if r.random() < 0.7 else ""
        o["billing"]["city"] = r.choice(CITIES)
        o["billing"]["postcode"] = f"{r.randrange(10_000, 99_999)}"
        for li in o["line_items"]:
            li["name"] = r.choice(PRODUCTS)
        return o

    def shopify_order(self, p: Person, n: int) -> dict[str, Any]:
        r = self.rng
        o = json.loads(json.dumps(self.shop_sample))
        o["id"] = 5_900_000_000_000 + n
        o["order_number"] = 20_000 + n
        o["name"] = f"#{o['order_number']}"
        o["email"] = o["contact_email"] = p.email
        if r.random() < 0.15:  # guest checkout: no customer object, the order's own email
            o["customer"] = None
            o["email"] = email_text(p.email, r.randrange(5))
        else:
            c = o["customer"]
            c["email"] = email_text(p.email, r.randrange(5))
            c["first_name"], c["last_name"] = p.first, p.last
            c["accepts_marketing"] = r.random() < 0.5
            c["phone"] = phone_text(p.mobile, 0) if r.random() < 0.5 else None
        o["shipping_address"]["phone"] = phone_text(p.mobile, r.randrange(7)) if r.random() < 0.5 else None
        o["shipping_address"]["city"] = r.choice(CITIES)
        for li in o["line_items"]:
            li["title"] = r.choice(PRODUCTS)
        return o

    def xml_order(self, p: Person, n: int) -> str:
        r = self.rng
        text = self.xml_sample.replace("PO-2024-00731", f"PO-2026-{n:06d}")
        text = text.replace("Greta.Vogel@Example.DE", email_text(p.email, r.randrange(3)))
        text = text.replace("Greta Vogel", f"{p.first} {p.last}")
        text = text.replace("<Quantity>2</Quantity>", f"<Quantity>{r.randint(1, 9)}</Quantity>")
        if r.random() < 0.3:  # one line only: decodes to an object, not a list
            text = re.sub(r"\s*<Line number=\"2\">.*?</Line>\s*<Line number=\"3\">.*?</Line>", "", text, flags=re.S)
        return text

    # -- the next request

    def next(self, n: int) -> Item:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        if kind == "woo_redelivery" and not self.woo_done:
            kind = "woo_order"
        return getattr(self, "_" + kind)(n, kind)

    def _json(self, n: int, kind: str, source: str, doc: Any, state: str = "processed", status: int = 200,
              **kw: Any) -> Item:
        return Item(n, kind, source, json.dumps(doc).encode(), "application/json", status, state, **kw)

    def _contact_json(self, n: int, kind: str) -> Item:
        return self._json(n, kind, "api", self.contact_doc(self.person(), "crm"))

    def _contact_wait(self, n: int, kind: str) -> Item:
        return self._json(n, kind, "api", self.contact_doc(self.person(), "crm"), query="wait=1")

    def _contact_signed(self, n: int, kind: str) -> Item:
        body = json.dumps(self.contact_doc(self.person(), "partner")).encode()
        return Item(n, kind, "signed", body, "application/json", 200, "processed", headers={
            "X-Hub-Signature-256": "sha256=" + hmac.new(SECRETS["signed"].encode(), body, hashlib.sha256).hexdigest(),
            "X-GitHub-Delivery": str(uuid.UUID(int=self.rng.getrandbits(128))), "X-GitHub-Event": "contact"})

    def _contact_form(self, n: int, kind: str) -> Item:
        doc = self.contact_doc(self.person(), "form", flat=True)
        pairs: list[tuple[str, str]] = []
        for k, v in doc.items():
            if isinstance(v, list):
                pairs.extend((k, x) for x in v)
            else:
                pairs.append((k, v))
        return Item(n, kind, "forms", urlencode(pairs).encode(), "application/x-www-form-urlencoded", 200,
                    "processed")

    def _rows(self, first: Person, k: int, source_name: str) -> list[dict[str, Any]]:
        """One returning person, then people seen nowhere else: rows of one request never share a
        profile, so no two events of one request compete (their event time is the same)."""
        return [self.contact_doc(first, source_name, flat=True)] + [
            self.contact_doc(self.fresh_person(), source_name, flat=True, link=False) for _ in range(k - 1)]

    def _contact_csv(self, n: int, kind: str) -> Item:
        rows = self._rows(self.person(), self.rng.randint(1, 4), "import")
        cols = ["SourceName", "SourceType", "Email", "Phone", "Mobile", "FirstName", "LastName", "DateOfBirth",
                "Gender", "EmailPermission", "SMSPermission", "PhonePermission", "AddressPermission"]
        lines = [",".join(cols)]
        for row in rows:
            lines.append(",".join('"' + str(row.get(c, "")).replace('"', '""') + '"' for c in cols))
        return Item(n, kind, "forms", ("\r\n".join(lines) + "\r\n").encode(), "text/csv", 200, "processed")

    def _contact_batch_json(self, n: int, kind: str) -> Item:
        rows = self._rows(self.person(), self.rng.randint(2, 4), "crm-batch")
        return self._json(n, kind, "api", rows)

    def _contact_bad_dob(self, n: int, kind: str) -> Item:
        doc = self.contact_doc(self.person(), "crm")
        doc["DateOfBirth"] = self.rng.choice(["1990-12-31", "31/12/1990", "13-45-1990"])
        return self._json(n, kind, "api", doc)  # a field error: the rest of the contact is kept

    def _contact_missing_required(self, n: int, kind: str) -> Item:
        doc = self.contact_doc(self.person(), "crm")
        del doc[self.rng.choice(["SourceName", "SourceType"])]
        return self._json(n, kind, "api", doc, "failed")

    def _contact_no_keys(self, n: int, kind: str) -> Item:
        return self._json(n, kind, "api", {"SourceName": "crm", "SourceType": "Web", "FirstName": "Nobody",
                                           "Interests": ["tea"]})

    def _woo_order(self, n: int, kind: str) -> Item:
        body = json.dumps(self.woo_order(self.person(), n)).encode()
        sig = base64.b64encode(hmac.new(SECRETS["woo"].encode(), body, hashlib.sha256).digest()).decode()
        return Item(n, kind, "woo", body, "application/json", 200, "processed", headers={
            "X-WC-Webhook-Signature": sig, "X-WC-Webhook-Topic": "order.created", "X-WC-Webhook-Resource": "order",
            "X-WC-Webhook-Event": "created", "X-WC-Webhook-Delivery-ID": str(100_000 + n)})

    def _woo_redelivery(self, n: int, kind: str) -> Item:
        orig = self.rng.choice(self.woo_done[-500:])
        return Item(n, kind, "woo", orig.body, orig.ctype, 200, "duplicate", headers=dict(orig.headers))

    def _woo_ping(self, n: int, kind: str) -> Item:
        return Item(n, kind, "woo", f"webhook_id={self.rng.randint(1, 99)}".encode(),
                    "application/x-www-form-urlencoded", 200, "ping")

    def _shopify_order(self, n: int, kind: str) -> Item:
        body = json.dumps(self.shopify_order(self.person(), n)).encode()
        sig = base64.b64encode(hmac.new(SECRETS["shopify"].encode(), body, hashlib.sha256).digest()).decode()
        return Item(n, kind, "shopify", body, "application/json", 200, "processed", headers={
            "X-Shopify-Hmac-Sha256": sig, "X-Shopify-Topic": "orders/create",
            "X-Shopify-Shop-Domain": "tea-and-kettle.myshopify.com"})

    def _xml_order(self, n: int, kind: str) -> Item:
        return Item(n, kind, "pos", self.xml_order(self.person(), n).encode(), "application/xml", 200, "processed")

    def _event_json(self, n: int, kind: str) -> Item:
        r = self.rng
        return self._json(n, kind, "events", {"type": r.choice(["page.view", "cart.add", "login"]), "seq": n,
                                              "at": "2026-11-23T10:00:00Z",
                                              "user": {"id": r.randrange(1000), "plan": r.choice(["free", "pro"])},
                                              "tags": r.sample(INTERESTS, 2), "score": r.random()})

    def _event_ndjson(self, n: int, kind: str) -> Item:
        lines = [json.dumps({"seq": n, "i": i, "ok": i % 2 == 0}) for i in range(self.rng.randint(1, 5))]
        return Item(n, kind, "events", ("\n".join(lines) + "\n").encode(), "application/x-ndjson", 200, "processed")

    def _event_csv(self, n: int, kind: str) -> Item:
        rows = ["sku;qty;price"] + [f"SKU-{n}-{i};{i + 1};{i * 3},50" for i in range(self.rng.randint(1, 6))]
        return Item(n, kind, "events", "\n".join(rows).encode(), "text/csv; charset=utf-8", 200, "processed")

    def _malformed_json(self, n: int, kind: str) -> Item:
        good = json.dumps(self.contact_doc(self.person(), "crm")).encode()
        bad = self.rng.choice([good[: len(good) // 2], good.replace(b'":', b'"', 1), b"{'single': 'quotes'}",
                               good + b"}", b"\xff\xfe" + good])
        return Item(n, kind, self.rng.choice(["api", "forms"]), bad, "application/json", 400, None)

    def _malformed_json_untyped(self, n: int, kind: str) -> Item:
        """No media type on an `auto` source: nothing checks it before the ack; the worker fails it."""
        good = json.dumps(self.contact_doc(self.person(), "form")).encode()
        return Item(n, kind, "forms", good[: len(good) - 7], None, 200, "failed")

    def _malformed_xml(self, n: int, kind: str) -> Item:
        bad = self.rng.choice([
            self.xml_sample.replace("</Order>", ""),
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><Order>&lol;</Order>',
            "<Order><Lines></Order>"])
        return Item(n, kind, "pos", bad.encode(), "text/xml", 400, None)

    def _malformed_csv(self, n: int, kind: str) -> Item:
        return Item(n, kind, "events", b'sku,qty\n"unterminated,1\n', "text/csv", 200, "failed")

    def _wrong_media_type(self, n: int, kind: str) -> Item:
        body = json.dumps(self.contact_doc(self.person(), "crm")).encode()
        return Item(n, kind, "api", body, self.rng.choice(["application/xml", "text/csv"]), 415, None)

    def _oversized(self, n: int, kind: str) -> Item:
        doc = self.contact_doc(self.person(), "form")
        doc["Notes"] = "x" * self.rng.randint(SMALL_MAX_BODY, 3 * SMALL_MAX_BODY)
        return self._json(n, kind, "forms", doc, None, 413, chunked=self.rng.random() < 0.5)

    def _bad_signature(self, n: int, kind: str) -> Item:
        r = self.rng
        source = r.choice(["signed", "woo", "shopify"])
        item = {"signed": self._contact_signed, "woo": self._woo_order, "shopify": self._shopify_order}[source](n, kind)
        item.expect_status, item.expect_state = 401, None
        name = {"signed": "X-Hub-Signature-256", "woo": "X-WC-Webhook-Signature",
                "shopify": "X-Shopify-Hmac-Sha256"}[source]
        how = r.randrange(3)
        if how == 0:
            del item.headers[name]  # missing
        elif how == 1:  # signed with another secret
            mac = hmac.new(b"not-the-secret", item.body, hashlib.sha256)
            item.headers[name] = "sha256=" + mac.hexdigest() if source == "signed" else base64.b64encode(
                mac.digest()).decode()
        else:  # the body changed after signing
            item.body = item.body.replace(b"{", b'{"tampered": true, ', 1)
        return item

    def _unknown_token(self, n: int, kind: str) -> Item:
        return Item(n, kind, None, b'{"hello": "scanner"}', "application/json", 404, None)


# ---------------------------------------------------------------- sending


@dataclass
class SendStats:
    started: float = 0.0
    ended: float = 0.0
    items: list[Item] = field(default_factory=list)
    unsent: int = 0  # slots still waiting for a connection when the time was up


async def chunks(body: bytes) -> Any:
    """The body as a stream: sent chunked, without a Content-Length."""
    for i in range(0, len(body), 16_384):
        yield body[i:i + 16_384]


async def send_all(corpus: Corpus, urls: dict[str | None, str], seconds: float, rate: float, connections: int,
                   progress: bool) -> SendStats:
    import httpx

    stats = SendStats()
    slots = itertools.count()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05
        end = t0 + seconds
        stats.started = time.time()

        async def sender() -> None:
            while True:
                k = next(slots)
                due = t0 + k / rate
                if due >= end or loop.time() >= end:  # the time is up, even if the sender is behind
                    return
                item = corpus.next(k)  # generated in slot order: one seed, one corpus (bar redeliveries)
                stats.items.append(item)
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                item.late_ms = max(0.0, (loop.time() - due) * 1000)
                url = urls[item.source] + (f"?{item.query}" if item.query else "")
                headers = dict(item.headers)
                if item.ctype is not None:
                    headers["Content-Type"] = item.ctype
                content: Any = chunks(item.body) if item.chunked else item.body
                start = time.perf_counter()
                try:
                    r = await client.post(url, content=content, headers=headers)
                    item.status = r.status_code
                    item.answer = r.content[:2000]
                    item.request_id = r.headers.get("x-request-id")
                    if item.request_id is None and 200 <= r.status_code < 300:
                        try:
                            item.request_id = r.json().get("request_id")
                        except ValueError:
                            pass
                except httpx.HTTPError as e:
                    item.error = f"{type(e).__name__}: {e}"[:200]
                item.latency_ms = (time.perf_counter() - start) * 1000
                if item.kind == "woo_order" and item.status == 200:
                    corpus.woo_done.append(item)

        async def reporter() -> None:
            while loop.time() < end:
                await asyncio.sleep(10)
                done = sum(1 for i in stats.items if i.latency_ms is not None)
                print(f"  {loop.time() - t0:5.0f} s: {done:,} answered", file=sys.stderr, flush=True)

        rep = asyncio.create_task(reporter()) if progress else None
        await asyncio.gather(*(sender() for _ in range(connections)))
        if rep is not None:
            rep.cancel()
        stats.ended = time.time()
        stats.unsent = max(0, math.ceil(seconds * rate) - len(stats.items))
    return stats


# ---------------------------------------------------------------- the reference outcome


Key = tuple[str, str]


def expected_profiles(contacts: list[tuple[dict[str, Any], list[dict[str, Any]], int, str, str]]) -> tuple[
        dict[frozenset[Key], dict[str, Any]], int]:
    """The order-independent outcome (as `expected_components` in
    tests/integration/test_identity_stateful.py): keys that ever shared a contact form one profile;
    each scalar field holds the value of the contact with the latest event time, with that
    contact's request as provenance; sets are unions; the ledger has every consent event; consent
    per channel is the latest event's. Two contacts of one profile with the same event time make
    the field or channel they both set ambiguous: then any of their values is accepted (the
    second return value counts such ties)."""
    from tests.models.identity import SETS, IdentityModel

    parent: dict[Key, Key] = {}

    def find(k: Key) -> Key:
        root = k
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[k] != root:
            parent[k], k = root, parent[k]
        return root

    for c, *_ in contacts:
        ks = IdentityModel.keys_of(c)
        for k in ks:
            find(k)
        for k in ks[1:]:
            a, b = find(k), find(ks[0])
            if a != b:
                parent[a] = b
    members: dict[Key, list[Any]] = defaultdict(list)
    for m in contacts:
        ks = IdentityModel.keys_of(m[0])
        if ks:
            members[find(ks[0])].append(m)
    groups: dict[Key, set[Key]] = defaultdict(set)
    for k in list(parent):
        groups[find(k)].add(k)
    ties = 0
    out = {}
    for root, ks in groups.items():
        fields: dict[str, Any] = {}
        ledger = []
        consent: dict[str, Any] = {}
        requests = set()
        for c, consents, at, rid, sid in sorted(members[root], key=lambda m: m[2]):
            requests.add(rid)
            for name, value in c.items():
                if value is None or value == "" or value == [] or value == {}:
                    continue
                if name in SETS and isinstance(value, list):
                    cur = fields.get(name)
                    fields[name] = sorted(set(map(str, value)) | (set(cur) if cur else set()))
                    continue
                cur = fields.get(name)
                if cur is not None and cur["at"] == at and cur["value"] != value:
                    ties += 1
                    cur["alts"].append((value, rid))
                    cur["value"], cur["request_id"] = value, rid
                else:
                    fields[name] = {"value": value, "at": at, "request_id": rid, "alts": [(value, rid)]}
            for e in consents:
                ledger.append((e["channel"], bool(e["granted"]), at, rid, sid))
                cur = consent.get(e["channel"])
                if cur is not None and cur["at"] == at:
                    ties += 1
                    cur["alts"].add(bool(e["granted"]))
                    cur["granted"] = bool(e["granted"])
                else:
                    consent[e["channel"]] = {"granted": bool(e["granted"]), "at": at, "alts": {bool(e["granted"])}}
        out[frozenset(ks)] = {"fields": fields, "ledger": sorted(ledger), "consent": consent, "requests": requests}
    return out, ties


def system_profiles(conn: Any, client_id: str) -> tuple[dict[frozenset[Key], dict[str, Any]], list[str]]:
    """The system's profiles of one client, keyed by key set; plus problems found on the way
    (a profile without keys, keys of a missing profile)."""
    import orjson
    import sqlalchemy as sa

    from hookbay.store import schema

    P, PK, CE, REC = schema.profiles, schema.profile_keys, schema.consent_events, schema.records
    keys: dict[str, set[Key]] = defaultdict(set)
    for kind, value, pid in conn.execute(sa.select(PK.c.kind, PK.c.value, PK.c.profile_id)
                                         .where(PK.c.client_id == client_id)):
        keys[pid].add((kind, value))
    fields = {pid: (orjson.loads(f) if isinstance(f, str | bytes) else f) for pid, f in conn.execute(
        sa.select(P.c.id, P.c.fields).where(P.c.client_id == client_id))}
    problems = [f"profile {pid} has no keys" for pid in set(fields) - set(keys)]
    problems += [f"keys {sorted(keys[pid])} point to missing profile {pid}" for pid in set(keys) - set(fields)]
    ledgers: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for pid, ch, granted, at, rid, sid, eid in conn.execute(sa.select(
            CE.c.profile_id, CE.c.channel, CE.c.granted, CE.c.occurred_at, CE.c.request_id, CE.c.source_id, CE.c.id)
            .where(CE.c.client_id == client_id)):
        ledgers[pid].append((ch, bool(granted), at, rid, sid, eid))
    requests: dict[str, set[str]] = defaultdict(set)
    for rid, pid in conn.execute(sa.select(REC.c.request_id, REC.c.profile_id)
                                 .where(REC.c.client_id == client_id, REC.c.profile_id.is_not(None))):
        requests[pid].add(rid)
    out = {}
    for pid, ks in keys.items():
        ledger = ledgers.get(pid, [])
        state: dict[str, bool] = {}
        for e in sorted(ledger, key=lambda e: (e[2], e[5])):
            state[e[0]] = e[1]
        out[frozenset(ks)] = {"id": pid, "fields": fields.get(pid, {}), "ledger": sorted(e[:5] for e in ledger),
                              "consent": state, "requests": requests.get(pid, set())}
    return out, problems


def compare_profiles(want: dict[frozenset[Key], dict[str, Any]], got: dict[frozenset[Key], dict[str, Any]]
                     ) -> list[str]:
    """Differences, one line each (empty when the system's profiles are the model's)."""
    from tests.models.identity import SETS

    diffs: list[str] = []
    for ks in sorted(set(want) - set(got), key=sorted):
        near = [g["id"] for gks, g in got.items() if gks & ks]
        diffs.append(f"model profile with keys {sorted(ks)} not in the system (its keys are on {near})")
    for ks in sorted(set(got) - set(want), key=sorted):
        diffs.append(f"system profile {got[ks]['id']} with keys {sorted(ks)} not in the model")
    for ks in set(want) & set(got):
        w, g = want[ks], got[ks]
        where = f"profile {g['id']} {sorted(ks)[:3]}{'...' if len(ks) > 3 else ''}"
        for name in sorted(set(w["fields"]) | set(g["fields"])):
            wf, gf = w["fields"].get(name), g["fields"].get(name)
            if wf is None or gf is None:
                diffs.append(f"{where}: field {name}: model {wf!r}, system {gf!r}")
            elif name in SETS and isinstance(gf.get("value"), list):
                if sorted(map(str, gf["value"])) != wf:
                    diffs.append(f"{where}: set {name}: model {wf}, system {sorted(map(str, gf['value']))}")
            elif (gf.get("value"), gf.get("request_id")) not in wf["alts"] or gf.get("at") != wf["at"]:
                diffs.append(f"{where}: field {name}: model {wf['value']!r} from {wf['request_id']} at {wf['at']}, "
                             f"system {gf.get('value')!r} from {gf.get('request_id')} at {gf.get('at')}")
        if w["ledger"] != g["ledger"]:
            missing = sorted(set(w["ledger"]) - set(g["ledger"]))
            extra = sorted(set(g["ledger"]) - set(w["ledger"]))
            diffs.append(f"{where}: consent ledger: missing {missing[:3]}, extra {extra[:3]} "
                         f"({len(w['ledger'])} expected, {len(g['ledger'])} stored)")
        for ch in sorted(set(w["consent"]) | set(g["consent"])):
            wc, gc = w["consent"].get(ch), g["consent"].get(ch)
            if wc is None or gc is None or gc not in wc["alts"]:
                diffs.append(f"{where}: consent {ch}: model {None if wc is None else wc['granted']}, system {gc}")
        if w["requests"] != g["requests"]:
            diffs.append(f"{where}: records of requests {sorted(w['requests'] - g['requests'])[:3]} missing, "
                         f"{sorted(g['requests'] - w['requests'])[:3]} extra")
    return diffs


# ---------------------------------------------------------------- the run


@dataclass
class Report:
    db: str
    args: argparse.Namespace
    workers: str = ""
    setup_error: str = ""
    send: SendStats | None = None
    drain_s: float | None = None
    drain_left: int | None = None
    checks: list[tuple[str, int | str, bool, str]] = field(default_factory=list)  # name, value, ok, detail
    db_counts: list[tuple[str, str, int]] = field(default_factory=list)
    failed_reasons: Counter[str] = field(default_factory=Counter)
    profile_stats: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    log_errors: Counter[str] = field(default_factory=Counter)
    merge_lookups: list[tuple[str, str, int, str | None, list[str]]] = field(default_factory=list)
    workers_left: list[str] = field(default_factory=list)  # heartbeat rows left after SIGTERM: no clean stop
    server_logs: dict[str, str] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.setup_error and bool(self.checks) and all(ok for _, _, ok, _ in self.checks)


def hookbay_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hookbay", *args]


def run_cli(args: list[str], env: dict[str, str]) -> str:
    p = subprocess.run(hookbay_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise TargetFailed(f"`hookbay {' '.join(args[:2])}` exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return p.stdout


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetFailed(f"server exited {proc.returncode}: {tail(log, 5)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TargetFailed(f"server not healthy after {timeout:.0f} s: {tail(log, 5)}")


def scrape_metrics(port: int) -> dict[str, float]:
    import httpx

    out: dict[str, float] = {}
    try:
        text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return out
    want = ("hookbay_jobs_failed_total", "hookbay_job_retries_total", "hookbay_worker_errors_total",
            "hookbay_write_retries_total", "hookbay_storage_errors_total")
    for line in text.splitlines():
        if line.startswith(want):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                pass
    return out


def lookup_merged(engine: Any, base: str, limit: int = 100) -> list[tuple[str, str, int, str | None, list[str]]]:
    """`GET /api/v1/profiles/{merged-away id}` for up to `limit` merges: (merged id, survivor
    recorded, status, id answered, its merged_from)."""
    import httpx
    import sqlalchemy as sa

    with engine.connect() as conn:
        merges = conn.execute(sa.text("SELECT merged_id, survivor_id FROM profile_merges WHERE client_id = :c "
                                      "ORDER BY merged_at"), {"c": CLIENT}).all()
    step = max(1, len(merges) // limit)
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as c:
        for merged, survivor in merges[::step][:limit]:
            r = c.get(f"/api/v1/profiles/{merged}")
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            out.append((merged, survivor, r.status_code, body.get("id"), list(body.get("merged_from") or [])))
    return out


def log_problems(text: str) -> Counter[str]:
    """error/critical log events by name (JSON logs) and tracebacks."""
    c: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if str(ev.get("level", "")).lower() in ("error", "critical", "exception"):
                c[str(ev.get("event", "?"))] += 1
        elif line.startswith("Traceback"):
            c["Traceback"] += 1
    return c


def soak(args: argparse.Namespace) -> Report:
    import sqlalchemy as sa

    rep = Report(db=args.db, args=args)
    work = RESULTS_DIR / f"soak-{args.db}-{uuid.uuid4().hex[:8]}.tmp"
    work.mkdir(parents=True)
    port = free_port()
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
               PYTHONUNBUFFERED="1", HOOKBAY_DATA_DIR=str(work), HOOKBAY_PORT=str(port), HOOKBAY_HOST=HOST,
               HOOKBAY_ADMIN_TOKEN=ADMIN_TOKEN, HOOKBAY_LOG_LEVEL="warning", HOOKBAY_LOG_JSON="true")
    env.pop("HOOKBAY_PUBLIC_URL", None)
    env.pop("HOOKBAY_ENCRYPTION_KEY", None)  # the exact-body check reads the stored bytes
    pg_name = None
    if args.db == "postgres":
        import psycopg

        pg_name = "hb_soak_" + uuid.uuid4().hex[:8]
        with psycopg.connect(args.pg_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{pg_name}"')
        db_url = args.pg_url.rsplit("/", 1)[0] + "/" + pg_name
        env["HOOKBAY_DATABASE_URL"] = db_url
        engine_url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
        rep.workers = "serve (ingest + worker) + `hookbay worker`: 2 workers"
    else:
        env.pop("HOOKBAY_DATABASE_URL", None)
        engine_url = f"sqlite:///{work / 'hookbay.db'}"
        rep.workers = "serve (ingest + worker): 1 worker"
    procs: dict[str, subprocess.Popen] = {}
    engine = None
    try:
        run_cli(["migrate"], env)
        srcs: dict[str, dict[str, Any]] = {}
        for key, (name, flags) in SOURCES.items():
            srcs[key] = json.loads(run_cli(["source", "create", "--name", name, "--client", CLIENT, "--json", *flags],
                                           env))
        base = f"http://{HOST}:{port}"
        urls: dict[str | None, str] = {k: base + urlsplit(s["ingest_url"]).path for k, s in srcs.items()}
        urls[None] = f"{base}/V1/Data/{uuid.uuid4()}"
        procs["serve"] = start_server(hookbay_cmd("serve"), env, work / "serve.log")
        wait_healthy(procs["serve"], f"{base}/healthz", work / "serve.log")
        if args.db == "postgres":
            procs["worker"] = start_server(hookbay_cmd("worker"), env, work / "worker.log")
        engine = sa.create_engine(engine_url)
        if "worker" in procs:  # the worker has registered its heartbeat
            deadline = time.monotonic() + 60
            with engine.connect() as conn:
                while conn.execute(sa.text("SELECT count(*) FROM workers")).scalar() < 2:
                    conn.rollback()
                    if procs["worker"].poll() is not None or time.monotonic() > deadline:
                        raise TargetFailed(f"`hookbay worker` did not start: {tail(work / 'worker.log', 5)}")
                    time.sleep(0.2)

        print(f"soak: {args.db}, {args.seconds:.0f} s at {args.rate:g} req/s over {args.connections} connections "
              f"({rep.workers})", file=sys.stderr, flush=True)
        corpus = Corpus(args.seed)
        rep.send = asyncio.run(send_all(corpus, urls, args.seconds, args.rate, args.connections, not args.quiet))

        # drain: every job done (jobs are deleted when their request ends processed or failed)
        t0 = time.monotonic()
        left = None
        with engine.connect() as conn:
            while True:
                left = conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar()
                conn.rollback()
                if left == 0 or time.monotonic() - t0 > args.drain_timeout:
                    break
                if any(p.poll() is not None for p in procs.values()):
                    break
                time.sleep(0.25)
        rep.drain_s, rep.drain_left = time.monotonic() - t0, left
        rep.metrics = scrape_metrics(port)
        rep.merge_lookups = lookup_merged(engine, base)
    except TargetFailed as e:
        rep.setup_error = str(e)
    finally:
        for name, p in procs.items():
            rep.exit_codes[name] = stop_server(p)
        for name in procs:
            text = (work / f"{name}.log").read_text(errors="replace")
            rep.log_errors.update({f"{name}: {k}": v for k, v in log_problems(text).items()})
            rep.server_logs[name] = tail(work / f"{name}.log", 15)

    try:
        if not rep.setup_error and engine is not None:
            with engine.connect() as conn:
                pids = {str(p.pid): name for name, p in procs.items()}
                for (wid,) in conn.execute(sa.text("SELECT id FROM workers")):
                    parts = str(wid).split(":")
                    rep.workers_left.append(f"{pids.get(parts[1], '?') if len(parts) > 1 else '?'} ({wid})")
                verify(rep, conn, srcs)
    finally:
        if engine is not None:
            engine.dispose()
        if pg_name is not None and not args.keep_data:
            import psycopg

            with psycopg.connect(args.pg_url, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        if args.keep_data:
            print(f"data kept in {work}" + (f" and database {pg_name}" if pg_name else ""), file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rep


def verify(rep: Report, conn: Any, srcs: dict[str, dict[str, Any]]) -> None:
    import orjson
    import sqlalchemy as sa

    from hookbay.processing.worker import parse_body
    from hookbay.store import schema
    from hookbay.store.source_rows import StoredSource
    from hookbay.store.sources import build_source

    assert rep.send is not None
    items = rep.send.items
    R = schema.requests
    rows = {r.id: r for r in conn.execute(sa.select(
        R.c.id, R.c.source_id, R.c.received_at, R.c.body, R.c.content_type, R.c.verdict, R.c.rule, R.c.status,
        R.c.state, R.c.receipt, R.c.duplicate_of).where(R.c.client_id == CLIENT))}
    for r in conn.execute(sa.select(R.c.verdict, R.c.state, sa.func.count()).group_by(R.c.verdict, R.c.state)
                          .order_by(R.c.verdict, R.c.state)):
        rep.db_counts.append((r[0], r[1], r[2]))
    jobs_left = conn.execute(sa.select(sa.func.count()).select_from(schema.jobs)).scalar()

    def receipt(row: Any) -> dict[str, Any]:
        rc = row.receipt
        return (orjson.loads(rc) if isinstance(rc, str | bytes) else rc) or {}

    # 1. every acknowledged request is stored with its exact body
    acked = [i for i in items if i.status is not None and 200 <= i.status < 300]
    missing = []
    for i in acked:
        row = rows.get(i.request_id or "")
        if row is None or row.body is None or bytes(row.body) != i.body:
            missing.append(f"#{i.n} {i.kind} -> {i.request_id}: " + ("not stored" if row is None else "body differs"))
    rep.checks.append(("acknowledged (2xx) requests missing or with another body", len(missing), not missing,
                       "; ".join(missing[:5])))

    # 2. nothing pending
    pending = [rid for rid, r in rows.items() if r.state == "pending"]
    rep.checks.append(("requests pending after drain", len(pending), not pending and jobs_left == 0,
                       f"jobs left {jobs_left}; drain {rep.drain_s:.1f} s" + (f"; e.g. {pending[:5]}" if pending else "")))

    # 3. no 5xx, no transport errors
    five = [i for i in items if i.status is not None and i.status >= 500]
    rep.checks.append(("responses 5xx", len(five), not five,
                       "; ".join(f"#{i.n} {i.kind} {i.status} {i.answer[:200]!r}" for i in five[:5])))
    errs = [i for i in items if i.error is not None]
    rep.checks.append(("requests without an answer (connection errors, timeouts)", len(errs), not errs,
                       "; ".join(f"#{i.n} {i.kind}: {i.error}" for i in errs[:5])))

    # 4. every failed request has a reason
    reasonless = []
    for rid, r in rows.items():
        if r.state == "failed":
            errors = receipt(r).get("errors") or []
            if not errors:
                reasonless.append(rid)
            for e in errors[:1]:
                rep.failed_reasons[str(e.get("code"))] += 1
    rep.checks.append(("failed requests without a reason (receipt errors empty)", len(reasonless), not reasonless,
                       ", ".join(reasonless[:5])))
    internal = rep.failed_reasons.get("internal_error", 0)
    rep.checks.append(("requests failed with internal_error", internal, internal == 0,
                       "processing raised unexpectedly: see the server log under these request ids" if internal else ""))

    # 5. every answer and end state is the corpus's expectation
    wrong = []
    first_of: dict[str, Item] = {}
    for i in items:
        if i.status is None:
            continue
        row = rows.get(i.request_id or "")
        state = None
        if i.status < 300 and row is not None:
            state = row.state
            if i.expect_state == "duplicate":
                state = "duplicate" if first_of.get(i.request_id or "") is not None else f"new({row.state})"
            else:
                first_of.setdefault(i.request_id or "", i)
        want_status = i.expect_status
        if i.query == "wait=1" and i.expect_state == "failed":
            want_status = 422
        if i.status != want_status or (i.expect_state is not None and state != i.expect_state):
            wrong.append(f"#{i.n} {i.kind} -> {i.status} {state} (expected {want_status} {i.expect_state}) "
                         f"{i.request_id or ''} {i.answer[:160]!r}")
    dup_rows = sum(1 for r in rows.values() if r.verdict == "duplicate")
    dups_sent = sum(1 for i in items if i.kind == "woo_redelivery" and i.status == 200)
    if dup_rows != dups_sent:
        wrong.append(f"{dups_sent} redeliveries answered 200 but {dup_rows} requests logged as duplicate")
    rep.checks.append(("answers or end states other than the corpus expects", len(wrong), not wrong,
                       "; ".join(wrong[:6])))

    # 6. profiles: the reference model's order-independent outcome of every processed contact
    src_rows = {r.id: dict(r._mapping) for r in conn.execute(sa.select(schema.sources))}
    active = {}
    for sid, row in src_rows.items():
        if isinstance(row["config"], dict):
            row["config"] = orjson.dumps(row["config"]).decode()
        active[sid] = build_source(StoredSource.of(row), 1 << 20)
    contact_ids = {srcs[k]["id"] for k in CONTACT_SOURCES}
    rec_counts = dict(conn.execute(sa.select(schema.records.c.request_id, sa.func.count())
                                   .where(schema.records.c.client_id == CLIENT)
                                   .group_by(schema.records.c.request_id)).all())
    contacts = []
    parse_mismatch = []
    for rid, r in rows.items():
        if r.verdict != "accepted" or r.state not in ("processed", "failed"):
            if rec_counts.get(rid):
                parse_mismatch.append(f"{rid} ({r.verdict}, {r.state}) has {rec_counts[rid]} records")
            continue
        out = parse_body(bytes(r.body or b""), r.content_type, active[r.source_id])
        if out.state != r.state or len(out.records) != rec_counts.get(rid, 0):
            parse_mismatch.append(f"{rid}: parsed again {out.state} with {len(out.records)} records, "
                                  f"stored {r.state} with {rec_counts.get(rid, 0)}")
        if r.source_id in contact_ids:
            for rec in out.records:
                contacts.append((rec["contact"], rec.get("consents", []), r.received_at, rid, r.source_id))
    for rid in set(rec_counts) - set(rows):
        parse_mismatch.append(f"records of an unknown request {rid}")
    want, ties = expected_profiles(contacts)
    got, problems = system_profiles(conn, CLIENT)
    diffs = problems + compare_profiles(want, got)
    merges = conn.execute(sa.select(sa.func.count()).select_from(schema.profile_merges)
                          .where(schema.profile_merges.c.client_id == CLIENT)).scalar()
    rep.profile_stats = {"contacts": len(contacts), "profiles expected": len(want), "profiles stored": len(got),
                         "merges recorded": merges or 0, "largest profile (keys)": max(map(len, want), default=0),
                         "same-time ties tolerated": ties}
    rep.checks.append(("profiles differing from the reference model", len(diffs), not diffs,
                       f"{len(want):,} profiles from {len(contacts):,} contacts; " + "; ".join(diffs[:6])))
    rep.checks.append(("stored end state or record count differs from parsing the body again",
                       len(parse_mismatch), not parse_mismatch, "; ".join(parse_mismatch[:5])))

    # 7. merges: a merged-away id is gone, its trail ends at a stored profile, and the API answers that
    trail = dict(conn.execute(sa.select(schema.profile_merges.c.merged_id, schema.profile_merges.c.survivor_id)
                              .where(schema.profile_merges.c.client_id == CLIENT)).all())
    stored = {g["id"] for g in got.values()}

    def end_of(pid: str) -> str:
        seen = set()
        while pid in trail and pid not in seen:
            seen.add(pid)
            pid = trail[pid]
        return pid

    bad_merges = [f"merged-away {m} still a profile" for m in trail if m in stored]
    bad_merges += [f"{m}'s trail ends at {end_of(m)}, not a profile" for m in trail if end_of(m) not in stored]
    for merged, _survivor, status, answered, merged_from in rep.merge_lookups:
        want_id = end_of(merged)
        if status != 200 or answered != want_id or merged not in merged_from:
            bad_merges.append(f"GET /api/v1/profiles/{merged} -> {status} {answered} (want {want_id}, "
                              f"with {merged} in merged_from)")
    rep.checks.append(("merge trail broken (merged-away id still a profile, trail not ending at a profile, "
                       "API lookup not answering the survivor)", len(bad_merges), not bad_merges,
                       f"{len(trail):,} merges, {len(rep.merge_lookups)} looked up by API; "
                       + "; ".join(bad_merges[:5])))
    rep.findings = diffs[:50] + wrong[:50] + missing[:50] + parse_mismatch[:20] + bad_merges[:20]


# ---------------------------------------------------------------- output


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def render(rep: Report, ts: str, command: str) -> str:
    a = rep.args
    lines = [f"# Soak, {rep.db}, {ts}", "", f"`{command}` on {platform.node()} ({os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}); {rep.workers}; seed {a.seed}", ""]
    if rep.setup_error:
        lines += [f"**FAILED to run**: {rep.setup_error}", ""]
    s = rep.send
    if s is not None and s.items:
        items = s.items
        answered = [i for i in items if i.latency_ms is not None and i.error is None]
        lat = [i.latency_ms for i in answered if i.latency_ms is not None]
        acked = [i for i in answered if i.status is not None and 200 <= i.status < 300]
        ack_lat = [i.latency_ms for i in acked if i.latency_ms is not None and not i.query]
        wall = max(1e-9, s.ended - s.started)
        late = [i.late_ms for i in items]
        lines += ["| figure | value |", "|---|---:|",
                  f"| database | {'PostgreSQL' if rep.db == 'postgres' else 'SQLite'} |",
                  f"| send phase | {a.seconds:g} s, {a.connections} connections |",
                  f"| offered rate | {a.rate:g} req/s |",
                  f"| achieved rate | {len(answered) / wall:,.1f} req/s |",
                  f"| requests sent | {len(items):,}" + (f" ({s.unsent:,} more due but not sent: sender behind)"
                                                        if s.unsent else "") + " |",
                  f"| acknowledged (2xx) | {len(acked):,} |",
                  f"| latency p50 / p99 / max, all answers | {pct(lat, 50):.1f} / {pct(lat, 99):.1f} / "
                  f"{max(lat, default=float('nan')):.1f} ms |",
                  f"| latency p50 / p99, 2xx without `?wait=1` | {pct(ack_lat, 50):.1f} / {pct(ack_lat, 99):.1f} ms |",
                  f"| sends behind schedule p99 / max | {pct(late, 99):.1f} / {max(late, default=0):.1f} ms |",
                  f"| drain after the send phase | {rep.drain_s or 0:.1f} s ({rep.drain_left} jobs left) |"]
        for k, v in rep.profile_stats.items():
            lines.append(f"| {k} | {v:,} |")
        lines.append("")
    if rep.checks:
        lines += ["## Invariants", "", "| invariant | count | result | detail |", "|---|---:|---|---|"]
        for name, value, ok, detail in rep.checks:
            d = detail.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {name} | {value} | {'PASS' if ok else '**FAIL**'} | {d[:600]} |")
        lines += ["", f"**Result: {'PASS' if rep.ok else 'FAIL'}**", ""]
    if s is not None and s.items:
        lines += ["## Requests by kind", "", "| kind | sent | answers | p50 ms | p99 ms |", "|---|---:|---|---:|---:|"]
        by_kind: dict[str, list[Item]] = defaultdict(list)
        for i in s.items:
            by_kind[i.kind].append(i)
        for kind in MIX:
            its = by_kind.get(kind, [])
            if not its:
                continue
            st = Counter(str(i.status) if i.error is None else "error" for i in its)
            lt = [i.latency_ms for i in its if i.latency_ms is not None]
            lines.append(f"| {kind} | {len(its):,} | {', '.join(f'{k}: {v:,}' for k, v in sorted(st.items()))} | "
                         f"{pct(lt, 50):.1f} | {pct(lt, 99):.1f} |")
        lines.append("")
    if rep.db_counts:
        lines += ["## Stored requests by verdict and state", "", "| verdict | state | requests |", "|---|---|---:|"]
        lines += [f"| {v} | {st} | {n:,} |" for v, st, n in rep.db_counts]
        lines.append("")
    if rep.failed_reasons:
        lines += ["Failed requests by first error code: " + ", ".join(
            f"`{k}` {v:,}" for k, v in rep.failed_reasons.most_common()), ""]
    if rep.metrics:
        lines += ["Server metrics (serve process): " + ", ".join(
            f"`{k}` {v:g}" for k, v in sorted(rep.metrics.items())), ""]
    lines += ["Error-level log events: " + (", ".join(f"`{k}` {v:,}" for k, v in rep.log_errors.most_common())
                                           if rep.log_errors else "none"), ""]
    lines += [f"Exit codes after SIGTERM: {', '.join(f'{k} {v}' for k, v in rep.exit_codes.items())} "
              "(-15: the signal, re-raised by uvicorn after its shutdown or not handled at all); workers still "
              "registered afterwards (no clean stop, running jobs not handed back): "
              + (", ".join(rep.workers_left) if rep.workers_left else "none"), ""]
    if rep.findings:
        lines += ["## Findings", "", *[f"- {f}" for f in rep.findings], ""]
    if not rep.ok:
        for name, text in rep.server_logs.items():
            lines += [f"## {name} log tail", "", "```", text, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0, help="length of the send phase (300)")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second offered (100)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections (8)")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-url", default=os.environ.get("HOOKBAY_TEST_PG_URL",
                                                       "postgresql://postgres@127.0.0.1:5432/postgres"),
                    help="admin connection used to CREATE (and afterwards DROP) a fresh database")
    ap.add_argument("--seed", type=int, default=12, help="corpus seed (12)")
    ap.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the queue (300)")
    ap.add_argument("--keep-data", action="store_true", help="keep the data dir, logs and PostgreSQL database")
    ap.add_argument("--no-save", action="store_true", help="print only, write nothing to bench/results")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    ts = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rep = soak(args)
    command = "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(rep, ts, command.strip())
    print(text)
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"soak-{args.db}-{ts}.md"
        out.write_text(text + "\n")
        print(f"written to {out.relative_to(ROOT)}", file=sys.stderr)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
