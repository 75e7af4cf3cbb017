"""Acoustic Campaign (formerly Silverpop / Watson Campaign Automation) contact push.

Why the XML API and not the REST contacts API: ``AddRecipient`` with ``UPDATE_IF_FOUND`` and
``SYNC_FIELDS`` on the email key is one documented, idempotent upsert per database (a retried
delivery cannot make a duplicate), available on every pod, and ``OptOutRecipient`` records an
explicit opt-out in the same database; the REST contacts API needs a lookup before an update.

Authentication is the documented OAuth2 refresh-token flow: ``POST {pod}/oauth/token`` with
``grant_type=refresh_token``, ``client_id``, ``client_secret`` and ``refresh_token`` gives a bearer
``access_token`` (about four hours; cached per credentials and pod and re-used). A 401 from the
XML API refreshes the token once and repeats the call. Other errors are raised as
:class:`AcousticError` (status, ``Retry-After``) for the delivery layer to classify: 429 and 5xx
are retried there with back-off, an XML ``Fault`` (bad list id, bad column) is permanent.

:class:`AcousticAction` is the push as an action type. It is not in the source actions'
registry: in #16 Acoustic is reached only through a client's provider connection
(:mod:`hookbay.providers`), whose key variable and pod only an admin sets; registering it would be
one line there plus its containment rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from defusedxml.ElementTree import fromstring as safe_fromstring
from pydantic import Field

from hookbay.actions.base import EXCERPT, ActionConfig, ActionResult, ActionRun, Permanent
from hookbay.actions.mailchimp import secret_env_allowed
from hookbay.actions.ssrf import check_destination
from hookbay.settings import Settings

EXCERPT_CHARS = 500
# The documented pods: https://api-campaign-{us-1..6,eu-1,ap-1,ap-2,ca-1}.goacoustic.com
POD = re.compile(r"[a-z]{2}-[0-9]{1,2}")
TOKEN_MARGIN_S = 300


class AcousticError(Exception):
    """A non-2xx answer or an XML fault; ``permanent`` when repeating the call cannot help."""

    def __init__(self, message: str, status_code: int | None = None, retry_after: str | None = None,
                 response_excerpt: str = "", permanent: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after
        self.response_excerpt = response_excerpt
        self.permanent = permanent


@dataclass(frozen=True, repr=False)
class Credentials:
    """``client_id:client_secret:refresh_token``, as one environment variable holds them."""

    client_id: str
    client_secret: str
    refresh_token: str

    @classmethod
    def parse(cls, text: str) -> Credentials:
        parts = text.strip().split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError("the Acoustic key must be client_id:client_secret:refresh_token")
        return cls(*parts)

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.client_id}\0{self.client_secret}\0{self.refresh_token}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, client_secret='***', refresh_token='***')"


def base_url_for_pod(pod: str) -> str:
    if not POD.fullmatch(pod):
        raise ValueError(f"unknown Acoustic pod {pod!r}: give it as in the API host, e.g. us-1, eu-1, ap-2")
    return f"https://api-campaign-{pod}.goacoustic.com"


_tokens: dict[tuple[str, str], tuple[str, float]] = {}
_token_locks: dict[tuple[str, str], asyncio.Lock] = {}


def forget_tokens() -> None:
    _tokens.clear()


def _el(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    e = ET.SubElement(parent, tag)
    if text is not None:
        e.text = text
    return e


def add_recipient_xml(list_id: str, email: str, columns: dict[str, str], created_from: int = 2) -> bytes:
    """``AddRecipient`` that updates the contact when the email is already in the database."""
    env = ET.Element("Envelope")
    op = _el(_el(env, "Body"), "AddRecipient")
    _el(op, "LIST_ID", list_id)
    _el(op, "CREATED_FROM", str(created_from))
    _el(op, "UPDATE_IF_FOUND", "true")
    sync = _el(_el(op, "SYNC_FIELDS"), "SYNC_FIELD")
    _el(sync, "NAME", "EMAIL")
    _el(sync, "VALUE", email)
    for name, value in {"EMAIL": email, **columns}.items():
        col = _el(op, "COLUMN")
        _el(col, "NAME", name)
        _el(col, "VALUE", value)
    out: bytes = ET.tostring(env, encoding="utf-8")
    return out


def opt_out_xml(list_id: str, email: str) -> bytes:
    env = ET.Element("Envelope")
    op = _el(_el(env, "Body"), "OptOutRecipient")
    _el(op, "LIST_ID", list_id)
    _el(op, "EMAIL", email)
    out: bytes = ET.tostring(env, encoding="utf-8")
    return out


def parse_result(text: str) -> dict[str, str]:
    """``Envelope/Body/RESULT`` as a flat dict; a ``SUCCESS`` other than true raises (the Fault text)."""
    try:
        root = safe_fromstring(text)
    except Exception:
        raise AcousticError("Acoustic answered with something that is not XML",
                            response_excerpt=text[:EXCERPT_CHARS]) from None
    result = root.find("./Body/RESULT")
    if result is None:
        raise AcousticError("Acoustic answered without a RESULT", response_excerpt=text[:EXCERPT_CHARS])
    out = {child.tag: (child.text or "").strip() for child in result}
    if out.get("SUCCESS", "").lower() != "true":
        fault = root.findtext("./Body/Fault/FaultString") or "the call failed"
        raise AcousticError(f"Acoustic fault: {fault.strip()}", 200, response_excerpt=text[:EXCERPT_CHARS],
                            permanent=True)
    return out


def contact_columns(contact: dict[str, Any]) -> dict[str, str]:
    """Contact format fields as the default columns of an Acoustic database."""
    names = {"first_name": "First Name", "last_name": "Last Name", "phone": "Phone", "mobile": "Mobile",
             "date_of_birth": "Birthday"}
    cols = {col: str(contact[key]) for key, col in names.items() if contact.get(key) not in (None, "")}
    addr = contact.get("address")
    if isinstance(addr, dict):
        for key, col in (("city", "City"), ("state", "State"), ("zip", "Zip"), ("country", "Country")):
            if addr.get(key):
                cols[col] = str(addr[key])
    return cols


class AcousticClient:
    def __init__(self, http: httpx.AsyncClient, creds: Credentials, base_url: str) -> None:
        self.http = http
        self.creds = creds
        self.base_url = base_url.rstrip("/")
        self._key = (self.base_url, creds.fingerprint())

    def __repr__(self) -> str:
        return f"AcousticClient(base_url={self.base_url!r})"

    async def _token(self, *, fresh: bool = False, stale: str | None = None) -> str:
        lock = _token_locks.setdefault(self._key, asyncio.Lock())
        async with lock:
            cached = _tokens.get(self._key)
            if cached is not None and cached[1] > time.monotonic() and not (fresh and cached[0] == stale):
                return cached[0]
            r = await self.http.post(f"{self.base_url}/oauth/token", data={
                "grant_type": "refresh_token", "client_id": self.creds.client_id,
                "client_secret": self.creds.client_secret, "refresh_token": self.creds.refresh_token})
            if r.status_code != 200:
                raise AcousticError(f"Acoustic token refresh: HTTP {r.status_code}", r.status_code,
                                    r.headers.get("retry-after"), r.text[:EXCERPT_CHARS],
                                    permanent=r.status_code in (400, 401, 403))
            body = r.json()
            token = body.get("access_token")
            if not isinstance(token, str) or not token:
                raise AcousticError("Acoustic token refresh: no access_token in the answer", r.status_code)
            ttl = float(body.get("expires_in") or 3600)
            _tokens[self._key] = (token, time.monotonic() + max(60.0, ttl - TOKEN_MARGIN_S))
            return token

    async def call(self, xml: bytes) -> dict[str, str]:
        """POST one XML API envelope; on 401 refresh the token once and repeat."""
        token = await self._token()
        for attempt in (1, 2):
            r = await self.http.post(f"{self.base_url}/XMLAPI", content=xml, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "text/xml;charset=utf-8"})
            if r.status_code == 401 and attempt == 1:
                token = await self._token(fresh=True, stale=token)
                continue
            if r.status_code // 100 != 2:
                raise AcousticError(f"Acoustic XML API: HTTP {r.status_code}", r.status_code,
                                    r.headers.get("retry-after"), r.text[:EXCERPT_CHARS],
                                    permanent=r.status_code in (400, 401, 403, 404))
            return parse_result(r.text)
        raise AssertionError("unreachable")

    async def push(self, list_id: str, contact: dict[str, Any], email_consent: bool | None) -> str:
        """Add or update the contact in one database with its opt-in state; returns a log line.

        Opted in: added or updated as opted in. Opted out: updated, then opted out. Unknown: not
        added (an Acoustic database is for marketing), so nothing is sent without consent."""
        email = contact.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise AcousticError("the contact has no email address", permanent=True)
        if email_consent is None:
            return f"{list_id}: not added (no email consent recorded)"
        res = await self.call(add_recipient_xml(list_id, email, contact_columns(contact)))
        rid = res.get("RecipientId", "")
        if email_consent is False:
            await self.call(opt_out_xml(list_id, email))
            return f"{list_id}: opted out {rid}"
        return f"{list_id}: opted in {rid}"


class AcousticAction(ActionConfig):
    """Add or update the contact in each of its ListIds' Acoustic databases, with its email consent."""

    type: Literal["acoustic"]
    key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$", description=(
        "Admin only: environment variable holding client_id:client_secret:refresh_token"))
    pod: str = Field(description="The pod of the API host, e.g. us-1 for api-campaign-us-1.goacoustic.com")

    def destination(self, settings: Settings) -> str:
        return f"acoustic:{urlsplit(settings.acoustic_base_url).hostname or self.pod}"

    async def execute(self, run: ActionRun) -> ActionResult:
        settings = run.settings
        if not secret_env_allowed(self.key_env, settings):
            raise Permanent(f"acoustic push: {self.key_env} is not a provider key variable; not sent")
        try:
            creds = Credentials.parse(os.environ.get(self.key_env, ""))
            base = settings.acoustic_base_url or base_url_for_pod(self.pod)
        except ValueError as e:
            raise Permanent(f"acoustic push: {e} ({self.key_env})") from None
        await check_destination(base, allow_private=run.source.allow_private_destinations)
        contact = dict(run.record.get("contact") or {})
        profile_fields = (run.profile or {}).get("fields") or {}
        merged = {**{k: v for k, v in profile_fields.items() if v not in (None, "", [])},
                  **{k: v for k, v in contact.items() if v not in (None, "", [])}}
        client = AcousticClient(run.http, creds, base)
        lines = []
        for list_id in [str(x) for x in contact.get("list_ids") or []]:
            try:
                lines.append(await client.push(list_id, merged, run.consent.get("email")))
            except AcousticError as e:
                if e.permanent:
                    raise Permanent(f"acoustic push: {e}") from None
                raise
        return ActionResult(200, "; ".join(lines)[:EXCERPT])
