"""The ``forward`` action: POST the record (or the raw body) to a URL, signed with Standard
Webhooks headers so any Standard Webhooks library verifies it.

The destination guard runs before connecting and again on the address actually connected to;
redirects are not followed; only the start of the answer is read.
"""

from __future__ import annotations

import time
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import Field, field_validator

from hookbay.actions.base import ActionConfig, ActionResult, ActionRun, Permanent, read_excerpt
from hookbay.actions.ssrf import check_destination, check_peer
from hookbay.settings import Settings
from hookbay.signatures import generate_secret, validate_secret
from hookbay.signatures.standard import sign_standard


def _whsec() -> str:
    return generate_secret("standard")


class ForwardAction(ActionConfig):
    """POST the record (or the raw body) to a URL, signed with Standard Webhooks headers."""

    type: Literal["forward"]
    url: str = Field(pattern=r"^https?://", max_length=2000)
    body: Literal["record", "raw"] = "record"
    secret: str = Field(default_factory=_whsec, pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$",
                        description="whsec_ signing secret; generated when omitted")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers; Host is admin only")
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        validate_secret("standard", v)
        return v

    def destination(self, settings: Settings) -> str:
        u = urlsplit(self.url)
        return f"http:{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"

    async def execute(self, run: ActionRun) -> ActionResult:
        allow_private = run.source.allow_private_destinations
        await check_destination(self.url, allow_private=allow_private)
        if self.body == "raw":
            raw, content_type = await run.raw_request()
            if raw is None:
                raise Permanent("the raw body was purged (retention) or erased")
            body = raw
            ctype = content_type or "application/octet-stream"
        else:
            body = orjson.dumps({
                "type": "hookbay.record", "source_id": run.source.id, "request_id": run.request_id,
                "record_index": run.record_idx, "profile_id": run.profile["id"] if run.profile else None,
                "data": run.record})
            ctype = "application/json"
        ts = int(time.time())
        headers = httpx.Headers(self.headers)
        headers.update({"content-type": ctype, "webhook-id": run.delivery_id, "webhook-timestamp": str(ts),
                        "webhook-signature": sign_standard(self.secret, run.delivery_id, ts, body)})
        async with run.http.stream("POST", self.url, content=body, headers=headers, timeout=self.timeout_s) as r:
            check_peer(r, self.url, allow_private)
            excerpt = await read_excerpt(r)
        return ActionResult(r.status_code, excerpt, r.headers.get("retry-after"))

    def host_header(self) -> str | None:
        for k, v in self.headers.items():
            if k.strip().lower() == "host":
                return v
        return None

    def admin_choices(self, allow_private: bool) -> set[tuple[Any, ...]]:
        """A Host header (it selects a virtual host behind the address the guard checked), and the
        URL on a source the admin let reach private addresses (else a tenant could turn an approved
        on-premises destination into the metadata endpoint)."""
        out: set[tuple[Any, ...]] = set()
        if (h := self.host_header()) is not None:
            out.add(("forward", self.url, h))
        if allow_private:
            out.add(("forward-url", self.url))
        return out

    def client_refusals(self, allowed: set[tuple[Any, ...]], allow_private: bool) -> list[tuple[str, str]]:
        bad = []
        if (h := self.host_header()) is not None and ("forward", self.url, h) not in allowed:
            bad.append(("headers.Host", "only an admin may set a forward's Host header"))
        if allow_private and ("forward-url", self.url) not in allowed:
            bad.append(("url", "this source may reach private addresses, so only an admin may change where it forwards"))
        return bad
