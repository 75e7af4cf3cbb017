"""Source use cases shared by the API, the console and the CLI, so all three validate, scope,
audit and reload the source cache the same way.

``cache`` is the serving process's :class:`SourceCache`, reloaded after a change so the next
request meets it; the CLI has none (running servers notice the change through ``sources_rev``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from hookbay.audit import source_summary
from hookbay.changes import merge_patch, weakenings
from hookbay.containment import check_config
from hookbay.errors import BadRequest, Conflict, NotFound
from hookbay.models import SourceConfig, SourceCreate, SourceOut, SourceReplace, SourceUpdate
from hookbay.ops.access import Principal, scope_client
from hookbay.settings import Settings
from hookbay.signatures import generate_secret, validate_secret
from hookbay.store import StoredSource, StoreInterface
from hookbay.store.sources import SourceCache
from hookbay.views import iso

log = structlog.get_logger("hookbay.ops")


async def _changed(cache: SourceCache | None) -> None:
    if cache is not None:
        await cache.reload()


def source_out(row: StoredSource, base_url: str, api_key: str | None = None, *, secrets: int = 0,
               secret: str | None = None) -> SourceOut:
    return SourceOut(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        token=row.token,
        ingest_url=f"{base_url}/V1/Data/{row.token}",
        enabled=row.enabled,
        api_key_required=row.api_key_hash is not None,
        config=SourceConfig.model_validate(row.config),
        created_at=iso(row.created_at) or "",
        updated_at=iso(row.updated_at) or "",
        api_key=api_key,
        signing_secrets=secrets,
        secret=secret,
    )


async def list_sources(store: StoreInterface, base_url: str, p: Principal, client_id: str | None = None) -> list[SourceOut]:
    rows = await store.list_sources(scope_client(p, client_id))
    counts = await store.secret_counts()
    return [source_out(r, base_url, secrets=counts.get(r.id, 0)) for r in rows]


@dataclass(frozen=True, slots=True)
class SourceChoice:
    """A source as a filter or a form offers it: enough to name and pick it, nothing secret."""

    id: str
    name: str
    client_id: str
    relay: bool  # whether ``hookbay agent`` may pull it (relay tokens are made only for these)


async def source_choices(store: StoreInterface, p: Principal) -> list[SourceChoice]:
    """The sources the caller sees, as the list to pick one from; cheaper than :func:`list_sources`
    (no ingest URLs, no secret counts)."""
    return [SourceChoice(id=r.id, name=r.name, client_id=r.client_id,
                         relay=bool(r.config.get("relay")))
            for r in await store.list_sources(scope_client(p, None))]


async def source_names(store: StoreInterface, p: Principal) -> dict[str, str]:
    """Source id to name, for the sources the caller sees: what pages show beside an id."""
    return {s.id: s.name for s in await source_choices(store, p)}


async def source_id(store: StoreInterface, p: Principal, ref: str) -> str:
    """The id of one source the caller sees, by id, ingest token or name; unlike :func:`get_source`
    it does not read the stored config, so it answers for a source whose config no longer loads."""
    return str((await store.get_source(ref, scope_client(p, None))).id)


async def get_source(store: StoreInterface, base_url: str, p: Principal, ref: str, client_id: str | None = None) -> SourceOut:
    """One source by id, ingest token or name (``client_id`` tells apart clients sharing a name)."""
    row = await store.get_source(ref, scope_client(p, client_id))
    return source_out(row, base_url, secrets=await store.secret_count(row.id))


async def stored_config(store: StoreInterface, p: Principal, ref: str, client_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """A source's id and its config exactly as stored: what an update of a few options merges into."""
    row = await store.get_source(ref, scope_client(p, client_id))
    return row.id, row.config


async def create_source(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal,
                        body: SourceCreate, *, settings: Settings) -> SourceOut:
    if not p.is_admin and body.client_id != p.client_id:
        raise NotFound("Not Found")
    check_config(body.config, settings, admin=p.is_admin)
    secret, generated = initial_secret(body.config, body.secret)
    changes, _ = source_summary(None, body.config.model_dump(), name=body.name, enabled=body.enabled,
                                api_key="new" if body.api_key else None)
    if secret:
        changes.append("secret: [set]")
    row, key = await store.create_source(
        name=body.name, client_id=body.client_id, config=body.config.model_dump(), enabled=body.enabled,
        api_key=body.api_key, secret=secret, audit=p.audit("source.create", changes),
    )
    await _changed(cache)
    return source_out(row, base_url, key, secrets=1 if secret else 0, secret=secret if generated else None)


async def update_source(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal, ref: str,
                        body: SourceUpdate, *, settings: Settings, action: str = "source.update",
                        client_id: str | None = None) -> SourceOut:
    """Change what ``body`` names and nothing else."""
    row = await store.get_source(ref, scope_client(p, client_id))
    changes = body.model_dump(exclude_unset=True, exclude_none=True, exclude={"rotate_api_key", "remove_api_key"})
    if body.config is not None:
        check_config(body.config, settings, admin=p.is_admin,
                     current=SourceConfig.model_validate(row.config))
        changes["config"] = body.config.model_dump()
    api_key = ("rotated" if row.api_key_hash else "new") if body.rotate_api_key else \
        ("removed" if body.remove_api_key and row.api_key_hash else None)
    summary, weak = source_summary(row, changes.get("config"), name=changes.get("name"),
                                   enabled=changes.get("enabled"), api_key=api_key)
    new, key = await store.update_source(row.id, changes, rotate_api_key=body.rotate_api_key,
                                         remove_api_key=body.remove_api_key,
                                         audit=p.audit(action, summary, weak))
    await _changed(cache)
    return source_out(new, base_url, key, secrets=await store.secret_count(new.id))


async def patch_source(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal, source_id: str,
                       patch: Any, *, settings: Settings) -> SourceOut:
    """PATCH as JSON Merge Patch (RFC 7396) over the source's definition: keys present change,
    ``null`` removes, absent keys stay. A removed check is explicit by construction (the patch names
    it) and is logged as ``source_checks_weakened``."""
    row = await store.get_source(source_id, scope_client(p, None))
    if not isinstance(patch, dict):
        raise BadRequest("A merge patch is a JSON object")
    flags = {k: patch[k] for k in ("rotate_api_key", "remove_api_key") if k in patch}
    doc = {k: v for k, v in patch.items() if k not in flags}
    current = {"name": row.name, "enabled": row.enabled,
               "config": row.config}
    merged = merge_patch(current, doc)
    body = SourceUpdate.model_validate({**merged, **flags})  # a ValidationError is the caller's 422
    return await _update_checked(store, cache, base_url, p, row, body, explicit=None, settings=settings,
                                 action="source.patch")


async def replace_source(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal, source_id: str,
                         body: SourceReplace, *, settings: Settings) -> SourceOut:
    """PUT: the whole definition. A check the new definition drops is refused unless the body names
    that field explicitly (``"signature": null``), so a forgotten field never silently weakens."""
    row = await store.get_source(source_id, scope_client(p, None))
    update = SourceUpdate(name=body.name, enabled=body.enabled, config=body.config)
    return await _update_checked(store, cache, base_url, p, row, update, explicit=body.config.model_fields_set,
                                 settings=settings, action="source.replace")


async def _update_checked(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal,
                          row: StoredSource, body: SourceUpdate, *, explicit: set[str] | None,
                          settings: Settings, action: str) -> SourceOut:
    old = SourceConfig.model_validate(row.config)
    weakened = weakenings(old, body.config) if body.config is not None else {}
    if body.remove_api_key and row.api_key_hash:
        weakened["api_key"] = "API key requirement removed"
    if explicit is not None:
        implicit = sorted(f for f in weakened if f != "api_key" and f not in explicit)
        if implicit:
            raise Conflict(
                "This definition would weaken the source's checks without naming them; to do it on purpose, "
                "include the field explicitly (e.g. \"signature\": null)",
                detail=[{"path": f"config.{f}", "message": weakened[f]} for f in implicit])
    out = await update_source(store, cache, base_url, p, row.id, body, settings=settings, action=action)
    if weakened:
        log_weakened(p, row, sorted(weakened.values()))
    return out


def log_weakened(p: Principal, row: StoredSource, changes: list[str]) -> None:
    log.warning("source_checks_weakened", source_id=row.id, client_id=row.client_id, actor=p.actor.name,
                changes=changes)


async def rotate_secret(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal, ref: str, *,
                        secret: str | None, grace_seconds: float | None,
                        client_id: str | None = None) -> SourceOut:
    """Add a signing secret (the provider's, or one generated and shown once); the others stay
    valid for ``grace_seconds`` (None: until removed; 0: retired now)."""
    row = await store.get_source(ref, scope_client(p, client_id))
    cfg = SourceConfig.model_validate(row.config)
    if cfg.signature is None:
        raise BadRequest("This source has no signature scheme; set config.signature first")
    if secret:
        initial_secret(cfg, secret)
    new_secret = secret or generate_secret(cfg.signature.scheme)
    grace = "old secrets retired now" if grace_seconds == 0 else (
        "old secrets kept" if grace_seconds is None else f"old secrets valid for {grace_seconds:g}s")
    await store.add_secret(row.id, new_secret, retire_others_after_s=grace_seconds,
                           audit=p.audit("secret.rotate", ["secret: [changed]", grace]))
    await _changed(cache)
    return source_out(row, base_url, secrets=await store.secret_count(row.id),
                      secret=None if secret else new_secret)


async def rotate_api_key(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal, ref: str, *,
                         client_id: str | None = None) -> SourceOut:
    """A new API key at once (shown once); the old one stops working. Only for a source that
    already requires one: starting to require a key is an update, not a rotation."""
    row = await store.get_source(ref, scope_client(p, client_id))
    if row.api_key_hash is None:
        raise BadRequest("This source does not require an API key, so there is none to rotate; "
                         "to start requiring one, use `hookbay source update SOURCE --api-key`")
    new, key = await store.update_source(row.id, {}, rotate_api_key=True,
                                         audit=p.audit("api_key.rotate", ["api_key: [changed]"]))
    await _changed(cache)
    return source_out(new, base_url, key, secrets=await store.secret_count(row.id))


async def delete_source(store: StoreInterface, cache: SourceCache | None, p: Principal, ref: str, *,
                        client_id: str | None = None, action: str = "source.delete",
                        why: list[str] | None = None) -> str:
    """Delete a source (its stored requests stay in the log); returns its id."""
    row = await store.get_source(ref, scope_client(p, client_id))
    await store.delete_source(row.id, audit=p.audit(
        action, [f"name: {orjson.dumps(row.name).decode()}", *(why or [])]))
    await _changed(cache)
    return str(row.id)


def initial_secret(config: SourceConfig, given: str | None) -> tuple[str | None, bool]:
    """The secret a new source starts with: the provider's, or one we generate (shown once)."""
    if config.signature is None:
        if given and config.handshake is not None and config.handshake.type == "zoom":
            return given, False  # Zoom's secret token: the URL validation's HMAC key
        return None, False
    if given:
        try:
            validate_secret(config.signature.scheme, given)
        except ValueError as e:
            raise BadRequest(f"Unusable signing secret: {e}") from None
        return given, False
    return generate_secret(config.signature.scheme), True



async def stored_requests(store: StoreInterface, p: Principal, ref: str) -> int:
    """How many stored requests a source has: what the delete confirmation says will stay."""
    row = await store.get_source(ref, scope_client(p, None))
    return await store.count_requests(source_id=row.id)


async def loaded_cache(store: StoreInterface, default_max_body: int) -> SourceCache:
    """The source table loaded once, for a command that parses (replay, purge) without a server."""
    cache = SourceCache(store, default_max_body)
    await cache.reload()
    return cache
