"""API tokens: who a token is (for every API call and console page), and issuing, listing and
revoking them, which only the admin may do."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from pydantic import BaseModel, Field

from hookbay.errors import Forbidden, NotFound, Unauthorized
from hookbay.ops.access import Principal
from hookbay.store import StoreInterface, hash_secret
from hookbay.views import iso

ADMIN_TOKEN_META = "admin_token_hash"


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    client_id: str | None = Field(default=None, description="Scope to one client; null for an admin token")


class TokenOut(BaseModel):
    id: str
    name: str
    client_id: str | None
    token: str | None = Field(default=None, description="Shown once, at creation")


async def principal_for_token(store: StoreInterface, admin_hash_ref: dict[str, str | None], token: str) -> Principal:
    """The one check of an admin or client token, shared by the API's bearer header and the
    console's login form."""
    return await principal_for_hash(store, admin_hash_ref, hash_secret(token.strip()))


async def principal_for_hash(store: StoreInterface, admin_hash_ref: dict[str, str | None], h: str) -> Principal:
    """Who a token hash belongs to, now: the console keeps only the hash in its session cookie and
    asks again on every page, so a revoked or rotated token logs its sessions out at once."""
    admin_hash = admin_hash_ref.get("hash")
    if admin_hash and hmac.compare_digest(h, admin_hash):
        return Principal(None)
    found = await store.token_owner(h)
    if found is None:
        raise Unauthorized("Invalid token", headers={"WWW-Authenticate": "Bearer"})
    return Principal(found[0], token_id=found[1])


async def create_token(store: StoreInterface, p: Principal, name: str, client_id: str | None) -> TokenOut:
    if not p.is_admin:
        raise Forbidden("Only the admin token can create tokens")
    tid, tok = await store.create_token(name, client_id, audit=p.audit("token.create"))
    return TokenOut(id=tid, name=name, client_id=client_id, token=tok)


@dataclass(frozen=True, slots=True)
class TokenListed:
    """An API token as listed (``hookbay token list --json`` writes these fields in this order)."""

    id: str
    name: str
    client_id: str | None
    created_at: str | None


async def list_tokens(store: StoreInterface, p: Principal) -> list[TokenListed]:
    if not p.is_admin:
        raise Forbidden("Only the admin token can list tokens")
    return [TokenListed(t.id, t.name, t.client_id, iso(t.created_at)) for t in await store.list_tokens()]


async def revoke_token(store: StoreInterface, p: Principal, token_id: str) -> None:
    if not p.is_admin:
        raise NotFound("Not Found")
    await store.revoke_token(token_id, audit=p.audit("token.revoke"))


async def rotate_admin_token(store: StoreInterface, p: Principal) -> str:
    """Replace the generated admin token; running servers pick the new hash up within seconds."""
    if not p.is_admin:
        raise Forbidden("Only the admin can replace the admin token")
    tok = "hba_" + secrets.token_urlsafe(32)
    await store.set_meta(ADMIN_TOKEN_META, hash_secret(tok))
    await store.record_audit(p.audit("token.rotate_admin", ["admin token: [changed]"]))
    return tok
