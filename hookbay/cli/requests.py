"""`hookbay requests …` (search, follow, export, show the request log), `replay` and `purge`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer

from hookbay.cli.common import OPT_FILTER_CLIENT, JsonOpt, print_json, run, run_and_print, time_option
from hookbay.ids import request_id_floor
from hookbay.models import RequestSummary
from hookbay.ops import requests as request_ops
from hookbay.ops.access import Principal
from hookbay.ops.requests import ReplayIn
from hookbay.ops.sources import loaded_cache
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="Search and follow the request log.", invoke_without_command=True)
commands = typer.Typer()


def _fmt_row(r: dict[str, Any]) -> str:
    return (f"{r['received_at']}  {r['id']}  {r['method']:5} {r['status']}  {r['verdict']:9} {r['state']:9} "
            f"{r['rule'] or '-':10} {r['body_size']}B  {r['source_id']}")


def _check_times(since: str | None, until: str | None) -> None:
    """A bad --since/--until is named by its flag before ops parses it."""
    time_option("--since", since)
    time_option("--until", until)


@app.callback()
def requests_cmd(
    ctx: typer.Context,
    source: str = typer.Option(None, help="Source id, token or name"),
    since: str = typer.Option(None, help="ISO time or relative (15m, 2h, 3d)"),
    until: str = typer.Option(None),
    verdict: str = typer.Option(None, help="accepted|rejected|duplicate"),
    state: str = typer.Option(None, help="pending|processed|failed|rejected|duplicate"),
    q: str = typer.Option(None, help="Text in headers or body"),
    limit: int = typer.Option(50),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new requests"),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """List requests, newest first; with --follow, print new ones as they arrive (oldest first)."""
    if ctx.invoked_subcommand is not None:
        return

    def emit(rows: list[RequestSummary]) -> None:
        for r in rows:
            d = r.model_dump()
            sys.stdout.write((orjson.dumps(d).decode() if as_json else _fmt_row(d)) + "\n")
        sys.stdout.flush()

    async def go(store: Store, s: Settings) -> None:
        _check_times(since, until)
        p = Principal.cli()
        filters: dict[str, Any] = dict(source=source, since=since, until=until, verdict=verdict, state=state, q=q,
                                       client_id=client)
        rows = (await request_ops.search_requests(store, p, limit=limit, **filters)).items
        if not follow:
            if as_json:
                print_json([r.model_dump() for r in rows])
            else:
                emit(rows)
            return
        rows.reverse()
        emit(rows)
        last = rows[-1].id if rows else request_id_floor(int(time.time() * 1000))
        while True:
            new = await request_ops.requests_after(store, p, last, limit=500, **filters)
            if new:
                emit(new)
                last = new[-1].id
            else:
                await asyncio.sleep(0.5)

    try:
        run(go, as_json)
    except KeyboardInterrupt:
        pass


@app.command("export")
def requests_export(
    source: str = typer.Option(None, help="Source id, token or name"),
    since: str = typer.Option(None, help="ISO time or relative (15m, 2h, 3d)"),
    until: str = typer.Option(None),
    verdict: str = typer.Option(None), state: str = typer.Option(None),
    out: Path = typer.Option(None, "--out", help="Write to this file instead of stdout"),
    client: str = OPT_FILTER_CLIENT,
) -> None:
    """Export matching requests as NDJSON, oldest first: one line per request with headers, the
    exact body (base64, and as text when it is UTF-8), receipt and records."""

    async def go(store: Store, s: Settings) -> int:
        _check_times(since, until)
        found = request_ops.export_requests(store, Principal.cli(), source=source, since=since, until=until,
                                            verdict=verdict, state=state, client_id=client)
        sink = out.open("wb") if out else sys.stdout.buffer
        n = 0
        try:
            async for d in found:
                sink.write(orjson.dumps(d.model_dump()) + b"\n")
                n += 1
            return n
        finally:
            if out:
                sink.close()
            else:
                sink.flush()

    n = run(go)
    if out:
        typer.echo(f"exported {n} request(s) to {out}", err=True)


@app.command("show")
def requests_show(request_id: str, as_json: bool = JsonOpt) -> None:
    """Show one request with headers, body, receipt and records."""

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return (await request_ops.get_request(store, Principal.cli(), request_id)).model_dump()

    run_and_print(go, as_json, _request_lines)


def _request_lines(d: dict[str, Any]) -> Iterator[str]:
    yield _fmt_row(d)
    yield f"{d['method']} {d['path']}{'?' + d['query'] if d['query'] else ''}  from {d['peer']}"
    yield from (f"  {k}: {v}" for k, v in d["headers"])
    yield ""
    yield d["body"] if d["body"] is not None else f"<{d['body_size']} bytes, not UTF-8; see --json>"
    yield ""
    yield "receipt: " + orjson.dumps(d["receipt"]).decode()
    yield from ("record:  " + orjson.dumps(rec).decode() for rec in d["records"])


@commands.command("replay")
def replay_cmd(
    request_id: str = typer.Argument(None, help="One request; or filter with the options"),
    source: str = typer.Option(None), failed: bool = typer.Option(False, "--failed", help="Only failed requests"),
    since: str = typer.Option(None), until: str = typer.Option(None), limit: int = typer.Option(1000),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print a diff of old and new records; change nothing"),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Re-parse stored requests with the source's current parser and mapping version."""
    if not request_id and not source and not failed:
        typer.echo("error: give a request id, --source or --failed", err=True)
        raise typer.Exit(2)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        if not request_id:
            _check_times(since, until)
        body = ReplayIn.model_construct(  # the CLI's own checks stand in for the API's (no upper limit here)
            request_id=request_id, source=None if request_id else source,
            state="failed" if failed and not request_id else None, since=None if request_id else since,
            until=None if request_id else until, limit=limit, dry_run=dry_run, all=False)
        return await request_ops.replay_requests(store, await loaded_cache(store, s.max_body_bytes),
                                                 Principal.cli(), body)

    run_and_print(go, as_json, _replay_lines)


def _replay_lines(out: dict[str, Any]) -> Iterator[str]:
    for it in out["items"]:
        if "skipped" in it:
            yield f"{it['request_id']}: skipped ({it['skipped']})"
            continue
        yield f"{it['request_id']}: {it['old_state']} -> {it['new_state']}{'' if it['changed'] else ' (unchanged)'}"
        if out["dry_run"] and it["diff"]:
            yield it["diff"]
    yield f"{out['count']} request(s) {'would be ' if out['dry_run'] else ''}replayed"


@commands.command("purge")
def purge_cmd(dry_run: bool = typer.Option(False, "--dry-run", help="Count only"), as_json: bool = JsonOpt) -> None:
    """Purge raw bodies older than each source's retention_days (on a partitioned PostgreSQL request
    log, first drop the partitions wholly past retention), and relay messages acked longer ago
    than HOOKBAY_RELAY_ACKED_RETENTION_SECONDS, now (serve also does this hourly)."""
    from hookbay.ops.partitions import drop_expired
    from hookbay.ops.retention import prune_relay, purge_expired

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        cache = await loaded_cache(store, s.max_body_bytes)
        parts = await drop_expired(store, cache, dry_run=dry_run, lock_timeout_ms=s.busy_timeout_ms)
        bodies = await purge_expired(store, cache, dry_run=dry_run)
        return {"dry_run": dry_run, "partitions": parts, "bodies": bodies,
                "relay_acked": await prune_relay(store, s, dry_run=dry_run)}

    def text(out: dict[str, Any]) -> Iterator[str]:
        for p in out["partitions"]:
            yield f"partition {p['partition']}: {p['action']} ({p['rows']} requests{', ' + p['reason'] if p['reason'] else ''})"
        yield (f"{'would purge' if dry_run else 'purged'} {sum(out['bodies'].values())} raw bodies across "
               f"{len(out['bodies'])} source(s) with retention, and {out['relay_acked']} acked relay message(s)")

    run_and_print(go, as_json, text)

