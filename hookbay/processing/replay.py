"""Replay: re-parse stored requests with the source's current parser and mapping version.

A dry run returns, per request, the old and new records and a unified diff, and changes nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from hookbay.errors import HookbayError, StorageUnavailable
from hookbay.processing.worker import internal_error_message, process_request
from hookbay.results import ProcessResult
from hookbay.store import RequestFilter, StoreInterface
from hookbay.store.errors import describe
from hookbay.store.sources import SourceCache

log = structlog.get_logger("hookbay.replay")


def _pretty(records: list[dict[str, Any]]) -> list[str]:
    return orjson.dumps(records, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()


def _strip(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "profile_id"}


OffLoop = Callable[..., Awaitable[Any]]


async def replay(
    store: StoreInterface, cache: SourceCache, *, request_ids: list[str] | None = None, flt: RequestFilter | None = None,
    dry_run: bool = False, off_loop: OffLoop | None = None,
) -> list[dict[str, Any]]:
    """``off_loop(fn, *args)`` runs each parse elsewhere (the server's parse pool, under its CPU
    budget); without it (the CLI) parses run here."""
    if request_ids is None:
        assert flt is not None
        flt.verdict = "accepted"
        request_ids = [r.id for r in await store.search_requests(flt)]
    await cache.maybe_reload()
    reqs = await store.load_requests(request_ids)
    old = await store.records_for(request_ids)
    out: list[dict[str, Any]] = []
    results: list[ProcessResult] = []
    for rid in request_ids:
        req = reqs.get(rid)
        if req is None or req.verdict != "accepted" or req.body is None:
            out.append({"request_id": rid, "skipped": "not an accepted request with a stored body"})
            continue
        if req.state == "ping":
            out.append({"request_id": rid, "skipped": "a WooCommerce ping: nothing to parse"})
            continue
        src = cache.by_id.get(req.source_id or "")
        try:
            res: ProcessResult = (await off_loop(process_request, req, src) if off_loop is not None
                                  else process_request(req, src))
        except HookbayError as e:  # over the parse budget, or the parse pool broke
            out.append({"request_id": rid, "failed": f"{e.code}: {e.message}"})
            continue
        except Exception as e:
            log.error("replay_failed", request_id=rid, **describe(e))
            out.append({"request_id": rid, "failed": internal_error_message(rid)})
            continue
        before = [_strip(orjson.loads(r.data)) for r in old.get(rid, [])]
        after = [_strip(r) for r in res.records]
        diff = "\n".join(difflib.unified_diff(_pretty(before), _pretty(after), f"{rid} (stored)",
                                              f"{rid} (replayed)", lineterm=""))
        out.append({"request_id": rid, "old_state": req.state, "new_state": res.state,
                    "changed": before != after or req.state != res.state, "diff": diff,
                    "errors": res.receipt.errors, "records": len(after)})
        results.append(res)
    if results and not dry_run:
        failed: set[str] = set()
        for i in range(0, len(results), 200):
            chunk = results[i:i + 200]
            try:
                await store.finish_jobs(chunk, replace=True)
            except StorageUnavailable:
                raise
            except Exception:
                for res in chunk:  # one bad request must not sink the rest of the run
                    try:
                        await store.finish_jobs([res], replace=True)
                    except StorageUnavailable:
                        raise
                    except Exception as e:
                        log.error("replay_failed", request_id=res.request_id, **describe(e))
                        failed.add(res.request_id)
        for item in out:
            if item["request_id"] in failed:
                item["failed"] = internal_error_message(item["request_id"])
    return out
