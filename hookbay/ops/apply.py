"""Declared sources (``hookbay source apply``): a plan of what a list of source definitions
changes, then applying it. Idempotent: applying the same list twice changes nothing the second time.

A change that weakens a source's checks (signature, IP allowlist, required header, methods, API
key, outbound guard) is applied only when the definition names the field explicitly; otherwise the
step is refused and :func:`apply_plan` must not be called. A ``secret`` that differs becomes the
source's only signing secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from hookbay.audit import source_summary
from hookbay.changes import config_diff, weakenings
from hookbay.models import SourceConfig, SourceCreate
from hookbay.ops.access import Principal, scope_client
from hookbay.ops.sources import initial_secret, log_weakened, source_out
from hookbay.store import StoredSource, StoreInterface
from hookbay.store.sources import SourceCache


@dataclass
class Step:
    action: Literal["create", "change", "unchanged", "delete"]
    client_id: str
    name: str
    spec: SourceCreate | None  # None for a delete
    current: StoredSource | None  # None for a create
    changes: list[str] = field(default_factory=list)
    weakens: list[str] = field(default_factory=list)  # named explicitly, so applied (and logged)
    refused: list[str] = field(default_factory=list)  # not named: the whole plan is refused

    def view(self) -> dict[str, Any]:
        return {"action": self.action, "client_id": self.client_id, "name": self.name, "changes": self.changes,
                "weakens": self.weakens, "refused": self.refused}


async def plan_sources(store: StoreInterface, p: Principal, specs: list[SourceCreate], *, prune: bool = False) -> list[Step]:
    """What applying ``specs`` would do; with ``prune``, sources of the listed clients that the list
    does not name are deleted."""
    for spec in specs:
        scope_client(p, spec.client_id)
    existing = {(r.client_id, r.name): r for r in await store.list_sources(scope_client(p, None))}
    secrets = await store.source_secrets()
    steps: list[Step] = []
    for spec in specs:
        cur = existing.pop((spec.client_id, spec.name), None)
        if cur is None:
            steps.append(Step("create", spec.client_id, spec.name, spec, None))
            continue
        old_cfg = cur.config
        changes = config_diff(old_cfg, spec.config.model_dump())
        if cur.enabled != spec.enabled:
            changes.append(f"enabled: {cur.enabled} -> {spec.enabled}")
        if spec.api_key and cur.api_key_hash is None:
            changes.append("api_key: [new key]")
        weak = weakenings(SourceConfig.model_validate(old_cfg), spec.config)
        if not spec.api_key and cur.api_key_hash is not None:
            changes.append("api_key: required -> not required")
            weak["api_key"] = "API key requirement removed"
        explicit = set(spec.config.model_fields_set) | ({"api_key"} & set(spec.model_fields_set))
        if spec.secret and spec.config.signature is not None and \
                spec.secret not in {sec for sec, _ in secrets.get(cur.id, [])}:
            changes.append("secret: [changed]")
        steps.append(Step(
            "change" if changes else "unchanged", spec.client_id, spec.name, spec, cur, changes,
            weakens=[f"{f}: {why}" for f, why in sorted(weak.items()) if f in explicit],
            refused=[f"{f}: {why} (name `{f}` explicitly in the file to do this on purpose)"
                     for f, why in sorted(weak.items()) if f not in explicit]))
    if prune:
        clients = {spec.client_id for spec in specs}
        for (client, name), row in sorted(existing.items()):
            if client in clients:
                steps.append(Step("delete", client, name, None, row))
    return steps


async def apply_plan(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal,
                     steps: list[Step]) -> list[dict[str, Any]]:
    """Carry out a plan without refusals; one result per step, with keys and generated secrets shown once."""
    if any(st.refused for st in steps):
        raise ValueError("a refused plan is never applied")
    out = []
    for st in steps:
        cur, spec = st.current, st.spec
        if st.action == "delete":
            assert cur is not None
            await store.delete_source(cur.id, audit=p.audit(
                "source.apply.delete", [f"name: {orjson.dumps(cur.name).decode()}", "pruned: not in the file"]))
            out.append({"action": "deleted", "client_id": st.client_id, "name": st.name, "id": cur.id})
            continue
        assert spec is not None
        key = shown_secret = None
        if cur is None:
            first, generated = initial_secret(spec.config, spec.secret)
            summary, _ = source_summary(None, spec.config.model_dump(), name=spec.name, enabled=spec.enabled,
                                        api_key="new" if spec.api_key else None)
            row, key = await store.create_source(
                name=spec.name, client_id=spec.client_id, config=spec.config.model_dump(), enabled=spec.enabled,
                api_key=spec.api_key, secret=first,
                audit=p.audit("source.apply.create", summary + ["secret: [set]"] * bool(first)))
            shown_secret = first if generated else None
            action = "created"
        elif st.action == "change":
            row, key = await store.update_source(
                cur.id, {"config": spec.config.model_dump(), "enabled": spec.enabled},
                rotate_api_key=spec.api_key and cur.api_key_hash is None,
                remove_api_key=not spec.api_key and cur.api_key_hash is not None,
                audit=p.audit("source.apply.update", st.changes, st.weakens))
            if spec.secret and any(c.startswith("secret:") for c in st.changes):
                initial_secret(spec.config, spec.secret)
                await store.add_secret(cur.id, spec.secret, retire_others_after_s=0)
            if st.weakens:
                log_weakened(p, cur, st.weakens)
            action = "updated"
        else:
            row, action = cur, "unchanged"
        o = source_out(row, base_url, key, secret=shown_secret, secrets=await store.secret_count(row.id)).model_dump()
        out.append(o | {"action": action, "changes": st.changes, "weakens": st.weakens})
    if cache is not None:
        await cache.reload()
    return out
