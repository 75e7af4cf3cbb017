"""The operations layer (``hookbay.ops``) that the API, the console and the CLI share: its scoping,
its audit actors, token checks and the source cache it keeps current, called directly on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from hookbay.errors import BadRequest, Forbidden, NotFound, Unauthorized
from hookbay.ids import new_request_id, now_us
from hookbay.models import SourceConfig, SourceCreate, SourceUpdate
from hookbay.ops import audit as audit_ops
from hookbay.ops import deliveries as delivery_ops
from hookbay.ops import profiles as profile_ops
from hookbay.ops import requests as request_ops
from hookbay.ops import sources as source_ops
from hookbay.ops import tokens as token_ops
from hookbay.ops.access import Principal
from hookbay.ops.requests import ReplayIn
from hookbay.settings import Settings
from hookbay.store import Store, hash_secret
from hookbay.store.sources import SourceCache
from tests.conftest import make_settings

BASE = "http://hookbay.test"
ADMIN = Principal(None)
ACME = Principal("acme", token_id="tok_acme")


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    await asyncio.to_thread(s.migrate)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)  # type: ignore[no-any-return]


async def _request(store: Store, source_id: str, client_id: str) -> str:
    body = b'{"email": "x@example.com"}'
    return await store.writer.ingest({
        "id": new_request_id(), "source_id": source_id, "client_id": client_id, "received_at": now_us(),
        "method": "POST", "path": "/V1/Data/x", "query": "", "headers": "[]", "peer": "127.0.0.1",
        "content_type": "application/json", "body": body, "body_size": len(body), "verdict": "accepted",
        "rule": None, "status": 200, "state": "pending", "idempotency_key": None, "duplicate_of": None,
        "receipt": None, "processed_at": None,
    })


async def test_a_client_reaches_only_its_own_objects_through_every_operation(store: Store,
                                                                             settings: Settings) -> None:
    cache = SourceCache(store, 1 << 20)
    mine = await source_ops.create_source(store, cache, BASE, ACME, SourceCreate(
        name="web", client_id="acme", config=SourceConfig.model_validate({"signature": {"scheme": "github"}})),
        settings=settings)
    theirs = await source_ops.create_source(store, cache, BASE, ADMIN, SourceCreate(
        name="web", client_id="beta", api_key=True,
        config=SourceConfig.model_validate({"signature": {"scheme": "github"}})), settings=settings)
    their_request = await _request(store, theirs.id, "beta")
    my_request = await _request(store, mine.id, "acme")

    assert [s.id for s in await source_ops.list_sources(store, BASE, ACME)] == [mine.id]
    assert {s.id for s in await source_ops.list_sources(store, BASE, ADMIN)} == {mine.id, theirs.id}
    reaching_theirs = [
        source_ops.get_source(store, BASE, ACME, theirs.id),
        source_ops.get_source(store, BASE, ACME, "web", client_id="beta"),
        source_ops.list_sources(store, BASE, ACME, client_id="beta"),
        source_ops.create_source(store, cache, BASE, ACME, SourceCreate(name="x", client_id="beta"),
                                 settings=settings),
        source_ops.update_source(store, cache, BASE, ACME, theirs.id, SourceUpdate(enabled=False),
                                 settings=settings),
        source_ops.patch_source(store, cache, BASE, ACME, theirs.id, {"config": {"signature": None}},
                                settings=settings),
        source_ops.rotate_secret(store, cache, BASE, ACME, theirs.id, secret=None, grace_seconds=0),
        source_ops.rotate_api_key(store, cache, BASE, ACME, theirs.id),
        source_ops.delete_source(store, cache, ACME, theirs.id),
        request_ops.get_request(store, ACME, their_request),
        request_ops.request_body(store, ACME, their_request),
        request_ops.search_requests(store, ACME, source=theirs.id),
        request_ops.replay_requests(store, cache, ACME, ReplayIn(request_id=their_request)),
        request_ops.replay_requests(store, cache, ACME, ReplayIn(source=theirs.id)),
        delivery_ops.list_deliveries(store, ACME, source=theirs.id),
        delivery_ops.retry_dead_letters(store, ACME, client_id="beta"),
        profile_ops.find_profiles(store, ACME, email="x@example.com", client_id="beta"),
        audit_ops.list_audit(store, ACME, client_id="beta"),
    ]
    for attempt in reaching_theirs:
        with pytest.raises(NotFound):
            await attempt

    page = await request_ops.search_requests(store, ACME)
    assert [r.id for r in page.items] == [my_request]
    assert {e["client_id"] for e in (await audit_ops.list_audit(store, ACME))["items"]} == {"acme"}
    still = await source_ops.get_source(store, BASE, ADMIN, theirs.id)
    assert still.enabled and still.config.signature is not None and still.api_key_required


async def test_the_cli_acts_as_the_admin_and_is_audited_as_cli(store: Store, settings: Settings) -> None:
    out = await source_ops.create_source(store, None, BASE, Principal.cli(), SourceCreate(
        name="crm", client_id="acme"), settings=settings)
    await source_ops.update_source(store, None, BASE, Principal.cli(), "crm", SourceUpdate(enabled=False),
                                   settings=settings, client_id="acme")
    entries = (await audit_ops.list_audit(store, ADMIN))["items"]
    assert [(e["action"], e["target"], e["actor"], e["peer"]) for e in entries] == [
        ("source.update", out.id, f"cli:{getpass.getuser()}", "cli"),
        ("source.create", out.id, f"cli:{getpass.getuser()}", "cli"),
    ]
    assert not (await source_ops.get_source(store, BASE, ADMIN, out.id)).enabled


async def test_rotating_an_api_key_needs_one_and_replaces_it(store: Store, settings: Settings) -> None:
    plain = await source_ops.create_source(store, None, BASE, ADMIN, SourceCreate(name="open", client_id="acme"),
                                           settings=settings)
    with pytest.raises(BadRequest, match="does not require an API key"):
        await source_ops.rotate_api_key(store, None, BASE, ADMIN, plain.id)

    keyed = await source_ops.create_source(store, None, BASE, ADMIN, SourceCreate(
        name="keyed", client_id="acme", api_key=True), settings=settings)
    rotated = await source_ops.rotate_api_key(store, None, BASE, ACME, keyed.id)
    assert rotated.api_key and keyed.api_key and rotated.api_key != keyed.api_key
    row = await store.get_source(keyed.id)
    assert row.api_key_hash == hash_secret(rotated.api_key)
    latest = (await audit_ops.list_audit(store, ADMIN, limit=1))["items"][0]
    assert (latest["action"], latest["changes"], latest["actor"]) == ("api_key.rotate", ["api_key: [changed]"],
                                                                     "client:acme")


async def test_tokens_are_issued_checked_and_revoked_by_the_admin_only(store: Store) -> None:
    admin_ref: dict[str, str | None] = {"hash": hash_secret("the-admin-token")}
    made = await token_ops.create_token(store, ADMIN, "ci", "acme")
    assert made.token is not None
    who = await token_ops.principal_for_token(store, admin_ref, f"  {made.token} ")
    assert (who.client_id, who.token_id, who.is_admin) == ("acme", made.id, False)
    assert (await token_ops.principal_for_token(store, admin_ref, "the-admin-token")).is_admin

    with pytest.raises(Forbidden):
        await token_ops.create_token(store, who, "escalate", None)
    with pytest.raises(Forbidden):
        await token_ops.list_tokens(store, who)
    with pytest.raises(NotFound):
        await token_ops.revoke_token(store, who, made.id)
    assert [t.id for t in await token_ops.list_tokens(store, ADMIN)] == [made.id]

    await token_ops.revoke_token(store, ADMIN, made.id)
    with pytest.raises(Unauthorized):
        await token_ops.principal_for_token(store, admin_ref, made.token)

    new_admin = await token_ops.rotate_admin_token(store, Principal.cli())
    assert await store.get_meta(token_ops.ADMIN_TOKEN_META) == hash_secret(new_admin)
    actions = [e["action"] for e in (await audit_ops.list_audit(store, ADMIN))["items"]]
    assert actions == ["token.rotate_admin", "token.revoke", "token.create"]


async def test_a_source_change_reaches_the_given_cache_at_once(store: Store, settings: Settings) -> None:
    cache = SourceCache(store, 1 << 20, refresh_seconds=3600)
    await cache.reload()
    out = await source_ops.create_source(store, cache, BASE, ADMIN, SourceCreate(name="web", client_id="acme"),
                                         settings=settings)
    assert out.token in cache.by_token
    await source_ops.patch_source(store, cache, BASE, ADMIN, out.id, {"config": {"rate": 5}}, settings=settings)
    assert cache.by_token[out.token].config.rate == 5
    rotated = await source_ops.update_source(store, cache, BASE, ADMIN, out.id, SourceUpdate(
        config=SourceConfig.model_validate({"signature": {"scheme": "stripe"}})), settings=settings)
    assert rotated.config.signature is not None
    assert cache.by_token[out.token].active_secrets(now_us()) == []
    new = await source_ops.rotate_secret(store, cache, BASE, ADMIN, out.id, secret=None, grace_seconds=0)
    assert cache.by_token[out.token].active_secrets(now_us()) == [new.secret]
    await source_ops.delete_source(store, cache, ADMIN, out.id)
    assert out.token not in cache.by_token
    latest = (await store.list_audit())[0]
    assert (latest.action, orjson.loads(latest.changes)) == ("source.delete", ['name: "web"'])


async def test_a_declared_plan_stays_within_the_client_and_refuses_silent_weakening(store: Store,
                                                                                   settings: Settings) -> None:
    from hookbay.ops.apply import apply_plan, plan_sources

    signed = SourceConfig.model_validate({"signature": {"scheme": "github"}})
    await source_ops.create_source(store, None, BASE, ADMIN, SourceCreate(name="gh", client_id="acme", config=signed),
                                   settings=settings)
    await source_ops.create_source(store, None, BASE, ADMIN, SourceCreate(name="old", client_id="acme"),
                                   settings=settings)
    theirs = await source_ops.create_source(store, None, BASE, ADMIN, SourceCreate(name="old", client_id="beta"),
                                            settings=settings)
    with pytest.raises(NotFound):
        await plan_sources(store, ACME, [SourceCreate(name="x", client_id="beta")])

    forgets_signature = [SourceCreate(name="gh", client_id="acme"), SourceCreate(name="new", client_id="acme")]
    steps = await plan_sources(store, ACME, forgets_signature, prune=True)
    assert [(st.action, st.name, bool(st.refused)) for st in steps] == [
        ("change", "gh", True), ("create", "new", False), ("delete", "old", False)]
    with pytest.raises(ValueError):
        await apply_plan(store, None, BASE, ACME, steps)
    assert (await source_ops.get_source(store, BASE, ADMIN, "gh", "acme")).config.signature is not None

    names_it = [SourceCreate.model_validate({"name": "gh", "client_id": "acme", "config": {"signature": None}}),
                SourceCreate(name="new", client_id="acme")]
    steps = await plan_sources(store, ACME, names_it, prune=True)
    assert [st.weakens for st in steps if st.name == "gh"] == [["signature: signature check removed"]]
    results = await apply_plan(store, None, BASE, ACME, steps)
    assert [r["action"] for r in results] == ["updated", "created", "deleted"]
    assert sorted(s.name for s in await source_ops.list_sources(store, BASE, ACME)) == ["gh", "new"]
    assert (await source_ops.get_source(store, BASE, ADMIN, theirs.id)).name == "old"
    assert [st.action for st in await plan_sources(store, ACME, names_it, prune=True)] == ["unchanged", "unchanged"]
