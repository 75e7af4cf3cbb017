"""The ``mailchimp`` action: upsert the contact into Mailchimp audiences (Marketing API v3).

The ``httpx.AsyncClient`` is injected so the caller owns connection pooling, timeouts and the
outbound-address policy, and so tests can point the client at a local fake over real HTTP.
Errors are not retried here: the delivery layer classifies :class:`ProviderError` (status,
``Retry-After``) and network errors from httpx and schedules retries itself.

The API key is read from the server's environment at send time, and only from a provider-key
variable: the variable and the endpoint are admin choices (:meth:`MailchimpAction.admin_choices`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from hookbay.actions.base import EXCERPT, ActionConfig, ActionResult, ActionRun, Permanent
from hookbay.actions.ssrf import check_destination
from hookbay.settings import Settings

EXCERPT_CHARS = 500
_DATACENTER = re.compile(r"-([a-z]+[0-9]+)$")
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


@dataclass(frozen=True)
class MailchimpResult:
    """What the delivery log keeps of a successful push."""

    status_code: int
    member_id: str | None
    response_excerpt: str


class ProviderError(Exception):
    """A non-2xx answer, parsed from Mailchimp's problem JSON (RFC 7807 style).

    ``retry_after`` is the raw ``Retry-After`` header (seconds or HTTP date) so the caller can honour it.
    """

    def __init__(
        self,
        status_code: int,
        title: str,
        detail: str,
        retry_after: str | None = None,
        *,
        type: str | None = None,
        instance: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        response_excerpt: str = "",
    ) -> None:
        super().__init__(f"Mailchimp {status_code} {title}" + (f": {detail}" if detail else ""))
        self.status_code = status_code
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        self.type = type
        self.instance = instance
        self.errors = errors or []
        self.response_excerpt = response_excerpt

    @classmethod
    def from_response(cls, r: httpx.Response) -> ProviderError:
        excerpt = r.text[:EXCERPT_CHARS]
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        errors = body.get("errors")
        return cls(
            r.status_code,
            str(body.get("title") or r.reason_phrase or "HTTP error"),
            str(body.get("detail") or ""),
            r.headers.get("retry-after"),
            type=body.get("type") if isinstance(body.get("type"), str) else None,
            instance=body.get("instance") if isinstance(body.get("instance"), str) else None,
            errors=errors if isinstance(errors, list) else None,
            response_excerpt=excerpt,
        )


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 hex of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def base_url_for_key(api_key: str) -> str:
    """``<key>-us6`` -> ``https://us6.api.mailchimp.com/3.0``: the datacenter is the key's suffix."""
    m = _DATACENTER.search(api_key)
    if not m:
        raise ValueError("Mailchimp API key has no datacenter suffix (expected '<key>-<dc>', e.g. '...-us6')")
    return f"https://{m.group(1)}.api.mailchimp.com/3.0"


class MailchimpClient:
    """Upserts list members; one instance per API key, sharing the caller's HTTP client."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, base_url: str | None = None) -> None:
        self._http = http
        self._api_key = api_key
        self.base_url = (base_url or base_url_for_key(api_key)).rstrip("/")
        # Mailchimp accepts any username with the key as the password.
        self._auth = httpx.BasicAuth("hookbay", api_key)

    def __repr__(self) -> str:
        return f"MailchimpClient(base_url={self.base_url!r}, api_key='***')"

    async def _call(self, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        r = await self._http.request(method, self.base_url + path, json=body, auth=self._auth,
                                     headers={"Accept": "application/json"})
        if not 200 <= r.status_code < 300:
            raise ProviderError.from_response(r)
        return r

    async def upsert_member(
        self,
        list_id: str,
        email: str,
        *,
        status_if_new: str,
        merge_fields: dict[str, Any],
        tags: list[str] | None = None,
        status: str | None = None,
    ) -> MailchimpResult:
        """``PUT /lists/{id}/members/{hash}`` (create or update), then add ``tags`` as active.

        ``status`` is only sent when given: it overrides an existing member's status, which is how an
        explicit opt-out becomes ``unsubscribed``; ``status_if_new`` only applies on creation.
        """
        h = subscriber_hash(email)
        member_path = f"/lists/{_segment(list_id)}/members/{h}"
        body: dict[str, Any] = {"email_address": email, "status_if_new": status_if_new, "merge_fields": merge_fields}
        if status is not None:
            body["status"] = status
        r = await self._call("PUT", member_path, body)
        member_id: str | None = None
        try:
            data = r.json()
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                member_id = data["id"]
        except ValueError:
            pass
        excerpt = r.text[:EXCERPT_CHARS]
        if tags:
            await self._call("POST", member_path + "/tags",
                             {"tags": [{"name": t, "status": "active"} for t in tags]})
        return MailchimpResult(r.status_code, member_id or h, excerpt)


def _segment(value: str) -> str:
    """List ids are opaque: refuse anything that would change the URL path."""
    if not value or any(c in value for c in "/?#%") or value in (".", ".."):
        raise ValueError(f"invalid Mailchimp list id {value!r}")
    return value


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def contact_to_member(contact: dict[str, Any], consent: dict[str, bool | None]) -> dict[str, Any]:
    """Map our contact record to :meth:`MailchimpClient.upsert_member` keyword arguments.

    Returns ``{"email", "status_if_new", "merge_fields", "tags"}`` plus ``"status"`` for an opt-out,
    so a caller can do ``client.upsert_member(list_id, **contact_to_member(c, consent))``.

    Choices:
    - Only non-empty values become merge fields, so a partial record never blanks data in Mailchimp.
    - PHONE is ``phone``, else ``mobile`` (one phone field by default in an audience).
    - BIRTHDAY is ``MM/DD`` (Mailchimp's birthday type has no year); a non-ISO date is skipped.
    - ADDRESS is sent only when line1, city, state and zip are all present: Mailchimp rejects an
      incomplete address object. ``line2`` and ``country`` are added when present.
    - Email consent (``consent["email"]``): True → new members ``subscribed``; False → ``unsubscribed``
      both as ``status_if_new`` and as ``status``, so an explicit opt-out also unsubscribes an
      existing member; unknown → ``transactional`` (stored, never sent marketing). An opt-in does not
      force ``status`` on an existing member: Mailchimp refuses to resubscribe a member who
      unsubscribed ("Member In Compliance State"), so that member keeps its Mailchimp status.
    - Tags are the contact's ``interests``, de-duplicated, order kept.
    """
    email = _text(contact.get("email"))
    if email is None:
        raise ValueError("contact has no email address; Mailchimp members are keyed by email")
    merge: dict[str, Any] = {}
    for key, tag in (("first_name", "FNAME"), ("last_name", "LNAME")):
        if (v := _text(contact.get(key))) is not None:
            merge[tag] = v
    phone = _text(contact.get("phone")) or _text(contact.get("mobile"))
    if phone:
        merge["PHONE"] = phone
    dob = _text(contact.get("date_of_birth"))
    if dob and (m := _ISO_DATE.fullmatch(dob)):
        merge["BIRTHDAY"] = f"{m.group(2)}/{m.group(3)}"
    addr = contact.get("address")
    if isinstance(addr, dict):
        a = {
            "addr1": _text(addr.get("line1")),
            "addr2": _text(addr.get("line2")),
            "city": _text(addr.get("city")),
            "state": _text(addr.get("state")),
            "zip": _text(addr.get("zip")),
            "country": _text(addr.get("country")),
        }
        if all(a[k] for k in ("addr1", "city", "state", "zip")):
            merge["ADDRESS"] = {k: v for k, v in a.items() if v is not None}
    tags: list[str] = []
    for t in contact.get("interests") or []:
        if (s := _text(t)) is not None and s not in tags:
            tags.append(s)
    granted = consent.get("email")
    out: dict[str, Any] = {"email": email, "merge_fields": merge, "tags": tags}
    if granted is True:
        out["status_if_new"] = "subscribed"
    elif granted is False:
        out["status_if_new"] = "unsubscribed"
        out["status"] = "unsubscribed"
    else:
        out["status_if_new"] = "transactional"
    return out


DEFAULT_KEY_ENV = "HOOKBAY_MAILCHIMP_API_KEY"


def secret_env_allowed(name: str, settings: Settings) -> bool:
    """Only provider keys may be read from the environment, never the server's own settings."""
    return name == DEFAULT_KEY_ENV or name.startswith(settings.secret_env_prefix)


class MailchimpAction(ActionConfig):
    """Upsert the contact into Mailchimp audiences (PUT member by MD5 of the lower-cased email)."""

    type: Literal["mailchimp"]
    list_ids: list[str] = Field(default_factory=list, description="Audience ids; empty = the record's ListIds")
    api_key_env: str = Field(default=DEFAULT_KEY_ENV, pattern=r"^[A-Z_][A-Z0-9_]*$",
                             description=(
                                 "Admin only: environment variable on the server holding the API key; "
                                 "HOOKBAY_MAILCHIMP_API_KEY or a name under HOOKBAY_SECRET_ENV_PREFIX"))
    base_url: str | None = Field(default=None, description=(
        "Admin only: API base URL; default HOOKBAY_MAILCHIMP_BASE_URL, else from the key's datacenter"))

    def destination(self, settings: Settings) -> str:
        base = self.base_url or settings.mailchimp_base_url or "mailchimp"
        return f"mailchimp:{urlsplit(base).hostname or base}"

    async def execute(self, run: ActionRun) -> ActionResult:
        settings = run.settings
        if not secret_env_allowed(self.api_key_env, settings):
            raise Permanent(f"mailchimp action: {self.api_key_env} is not a provider key variable (names must "
                            f"start with {settings.secret_env_prefix}); not sent")
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise Permanent(f"mailchimp action: the environment variable {self.api_key_env} is not set")
        contact = dict(run.record.get("contact") or {})
        profile = run.profile or {}
        merged = {**{k: v for k, v in (profile.get("fields") or {}).items() if v not in (None, "", [])}, **{
            k: v for k, v in contact.items() if v not in (None, "", [])}}
        list_ids = self.list_ids or [str(x) for x in (contact.get("list_ids") or [])]
        if not list_ids:
            raise Permanent("mailchimp action: no list ids (set list_ids on the action or send ListIds)")
        try:
            member = contact_to_member(merged, run.consent)
            client = MailchimpClient(run.http, key, self.base_url or settings.mailchimp_base_url or None)
        except ValueError as e:
            raise Permanent(f"mailchimp action: {e}") from None
        await check_destination(client.base_url, allow_private=run.source.allow_private_destinations)
        excerpts = []
        for list_id in list_ids:
            try:
                res = await client.upsert_member(list_id, **member)
            except ValueError as e:
                raise Permanent(f"mailchimp action: {e}") from None
            excerpts.append(f"{list_id}: {res.status_code} {res.member_id}")
        return ActionResult(200, "; ".join(excerpts)[:EXCERPT])

    def admin_choices(self, allow_private: bool) -> set[tuple[Any, ...]]:
        """Which key goes to which endpoint."""
        return {("mailchimp", self.api_key_env, self.base_url)}

    def client_refusals(self, allowed: set[tuple[Any, ...]], allow_private: bool) -> list[tuple[str, str]]:
        if ("mailchimp", self.api_key_env, self.base_url) in allowed:
            return []
        keys = {p[1] for p in allowed if p[0] == "mailchimp"}
        field = "base_url" if self.api_key_env in keys else "api_key_env"
        return [(field, "only an admin may choose the server-side key or endpoint of a provider action; "
                        "ask an admin to add it")]

    def config_refusals(self, settings: Settings) -> list[tuple[str, str]]:
        if secret_env_allowed(self.api_key_env, settings):
            return []
        return [("api_key_env", f"a provider key must be in an environment variable whose name starts with "
                                f"{settings.secret_env_prefix} (HOOKBAY_SECRET_ENV_PREFIX)")]
