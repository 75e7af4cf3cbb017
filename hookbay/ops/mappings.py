"""The mapping editor's use cases: try a draft mapping against a source's stored requests (or a
pasted body) without writing anything, save it as the source's next mapping version, and replay
the requests that failed.

The preview runs the worker's own ``process_request`` with a source built from the draft, so what
it shows is what the worker (and a replay) would store.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import yaml

from hookbay.errors import BadRequest
from hookbay.ingest.endpoint import dry_run
from hookbay.models import SourceConfig, SourceOut
from hookbay.ops import sources as source_ops
from hookbay.ops.access import Principal, scope_client
from hookbay.ops.requests import ReplayIn, replay_requests
from hookbay.parsers import compile
from hookbay.parsers.mapping import MappingError
from hookbay.processing.replay import OffLoop
from hookbay.processing.worker import internal_error_message, process_request
from hookbay.results import ProcessResult
from hookbay.settings import Settings
from hookbay.store import RequestFilter, StoredSource, StoreInterface
from hookbay.store.sources import SourceCache, build_source

PREVIEW_REQUESTS = 20
FAILED_LIMIT = 1000


class DraftError(BadRequest):
    """A draft that is not a usable mapping; ``detail`` lists ``{"path", "message"}`` per problem."""


def parse_draft(text: str) -> dict[str, Any]:
    """YAML (or JSON) text as a mapping document, checked as the source config will check it."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise DraftError(f"Not valid YAML{where}: {getattr(e, 'problem', None) or e}",
                         detail=[{"path": "$", "message": f"not valid YAML{where}"}]) from None
    if not isinstance(doc, dict):
        raise DraftError("A mapping is a YAML object (version, target, fields, ...)",
                         detail=[{"path": "$", "message": "expected an object"}])
    try:
        compile.from_dict(doc)
    except MappingError as e:
        raise DraftError(f"Invalid mapping: {e}", detail=e.problems) from None
    return doc


def to_yaml(doc: dict[str, Any] | None) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True) if doc else ""


def _draft_source(row: StoredSource, draft: dict[str, Any], settings: Settings) -> Any:
    return build_source(replace(row, config={**row.config, "parser": "mapping", "mapping": draft}),
                        settings.max_body_bytes)


@dataclass
class Preview:
    requests: list[dict[str, Any]]
    pasted: dict[str, Any] | None


async def preview(store: StoreInterface, p: Principal, ref: str, draft: dict[str, Any], *, settings: Settings,
                  body: bytes | None = None, content_type: str | None = None,
                  off_loop: OffLoop | None = None) -> Preview:
    """Records and field errors the draft makes of the source's last stored requests (and of a
    pasted body). Reads only: nothing is stored, no action runs."""
    row = await store.get_source(ref, scope_client(p, None))
    src = _draft_source(row, draft, settings)
    rows = await store.search_requests(RequestFilter(source_id=row.id, client_id=row.client_id,
                                                     verdict="accepted", limit=PREVIEW_REQUESTS))
    ids = [r.id for r in rows]
    reqs = await store.load_requests(ids)
    out: list[dict[str, Any]] = []
    for rid in ids:
        req = reqs.get(rid)
        item: dict[str, Any] = {"request_id": rid, "stored_state": req.state if req else None,
                                "received_at": req.received_at if req else None}
        if req is None or req.body is None:
            out.append({**item, "skipped": "its body was purged"})
            continue
        try:
            res: ProcessResult = (await off_loop(process_request, req, src) if off_loop is not None
                                  else process_request(req, src))
        except Exception as e:  # over the parse budget, or the pool broke: name the request, nothing else
            out.append({**item, "skipped": getattr(e, "message", None) or internal_error_message(rid)})
            continue
        out.append({**item, "state": res.state, "records": res.records, "errors": res.receipt.errors,
                    "warnings": res.receipt.warnings})
    pasted = None
    if body is not None:
        if len(body) > src.max_body:
            raise BadRequest(f"The pasted body is over the source's limit of {src.max_body} bytes")
        if off_loop is not None:
            pasted = await off_loop(dry_run, body, content_type, src, settings)
        else:
            pasted = dry_run(body, content_type, src, settings)
    return Preview(requests=out, pasted=pasted)


async def save(store: StoreInterface, cache: SourceCache | None, base_url: str, p: Principal, ref: str,
               draft: dict[str, Any], *, settings: Settings) -> tuple[SourceOut, int]:
    """Store the draft as the source's mapping (and ``parser: mapping``). A changed mapping gets
    the next version number unless the draft already names a higher one, so records made by it
    are told apart from the previous version's; returns the source and the version saved."""
    row = await store.get_source(ref, scope_client(p, None))
    current = SourceConfig.model_validate(row.config)
    old = current.mapping or {}
    version = int(draft.get("version") or 1)
    if current.mapping is not None and {**draft, "version": 0} != {**old, "version": 0}:
        version = max(version, int(old.get("version") or 0) + 1)
    doc = {**draft, "version": version}
    out = await source_ops.patch_source(store, cache, base_url, p, row.id,
                                        {"config": {"parser": "mapping", "mapping": doc}}, settings=settings)
    return out, version


async def failed_count(store: StoreInterface, p: Principal, ref: str) -> int:
    """How many of the source's stored requests failed to parse (up to the replay limit)."""
    row = await store.get_source(ref, scope_client(p, None))
    rows = await store.search_requests(RequestFilter(source_id=row.id, client_id=row.client_id,
                                                     state="failed", limit=FAILED_LIMIT))
    return len(rows)


async def replay_failed(store: StoreInterface, cache: SourceCache, p: Principal, ref: str,
                        off_loop: OffLoop | None = None) -> dict[str, Any]:
    """Re-parse the source's failed requests with its current mapping: the replay operation."""
    row = await store.get_source(ref, scope_client(p, None))
    return await replay_requests(store, cache, p, ReplayIn(source=row.id, state="failed", limit=FAILED_LIMIT),
                                 off_loop)
