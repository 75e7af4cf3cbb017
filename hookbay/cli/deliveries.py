"""`hookbay deliveries …`: action deliveries and dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from hookbay.actions.registry import ACTION_TYPES
from hookbay.cli.common import OPT_FILTER_CLIENT, JsonOpt, run_and_print, time_option
from hookbay.ops import deliveries as delivery_ops
from hookbay.ops.access import Principal
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="Action deliveries and dead letters.", no_args_is_help=True)


def _check_times(since: str | None, until: str | None) -> None:
    """A bad --since/--until is named by its flag before ops parses it."""
    time_option("--since", since)
    time_option("--until", until)


@app.command("list")
def deliveries_list(
    source: str = typer.Option(None, help="Source id, token or name"),
    state: str = typer.Option(None, help="pending|running|succeeded|dead|skipped (dead = dead letters)"),
    action: str = typer.Option(None, help="|".join(ACTION_TYPES)),
    request: str = typer.Option(None, help="Only this request's deliveries"),
    error: str = typer.Option(None, help="Text in the last error"),
    since: str = typer.Option(None, help="ISO time or relative (15m, 2h, 3d)"),
    until: str = typer.Option(None),
    limit: int = typer.Option(50),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """List deliveries, newest first."""
    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        _check_times(since, until)
        page = await delivery_ops.list_deliveries(store, Principal.cli(), source=source, state=state,
                                                  action_type=action, request_id=request, error=error,
                                                  since=since, until=until, limit=limit, client_id=client)
        items: list[dict[str, Any]] = page["items"]
        return items

    run_and_print(go, as_json, lambda rows: (
        f"{d['created_at']}  {d['id']}  {d['action_type']:9} {d['state']:9} tries={d['attempts']} "
        f"{d['last_status'] or '-'}  {d['destination']}  {d['last_error'] or ''}" for d in rows))


@app.command("show")
def deliveries_show(delivery_id: str, as_json: bool = JsonOpt) -> None:
    """Show one delivery with every attempt."""
    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return await delivery_ops.get_delivery(store, Principal.cli(), delivery_id)

    run_and_print(go, as_json, _delivery_lines)


def _delivery_lines(d: dict[str, Any]) -> Iterator[str]:
    yield f"{d['id']}  {d['action_type']} {d['action_name']!r} -> {d['destination']}  state={d['state']}"
    yield f"request {d['request_id']} record {d['record_index']}  next attempt: {d['next_attempt_at'] or '-'}"
    for a in d["attempt_log"]:
        yield (f"  #{a['attempt']} {a['started_at']}  {a['outcome']:7} {a['status'] or '-'}  "
               f"{a['latency_ms']} ms  {a['error'] or ''}  {(a['response_excerpt'] or '')[:120]}")


@app.command("retry")
def deliveries_retry(
    delivery_ids: list[str] = typer.Argument(None, help="Deliveries to run again (any finished state)"),
    source: str = typer.Option(None, help="Dead letters of this source"),
    action: str = typer.Option(None, help="Dead letters of this action type"),
    error: str = typer.Option(None, help="Dead letters whose last error contains this text"),
    since: str = typer.Option(None), until: str = typer.Option(None),
    all_dead: bool = typer.Option(False, "--all", help="Every dead letter (when no other filter is given)"),
    client: str = OPT_FILTER_CLIENT,
    as_json: bool = JsonOpt,
) -> None:
    """Queue dead letters again, one by one (ids) or in bulk by filter, with a fresh retry schedule."""
    if not delivery_ids and not any((source, action, error, since, until, client, all_dead)):
        typer.echo("error: give delivery ids, a filter (--source/--action/--error/--since/--until/--client) or --all",
                   err=True)
        raise typer.Exit(2)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        if delivery_ids:
            ids = await delivery_ops.retry_deliveries(store, Principal.cli(), list(delivery_ids))
            return {"count": len(ids), "ids": ids}
        _check_times(since, until)
        return await delivery_ops.retry_dead_letters(store, Principal.cli(), source=source, action_type=action,
                                                     error=error, since=since, until=until, all=all_dead,
                                                     client_id=client)

    run_and_print(go, as_json, lambda out: f"queued {out['count']} deliver{'y' if out['count'] == 1 else 'ies'} again")

