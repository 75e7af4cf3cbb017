"""`hookbay partitions`: the request log's time partitions on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from hookbay.cli.common import JsonOpt, run_and_print
from hookbay.settings import Settings
from hookbay.store import Store

app = typer.Typer(help="The request log's time partitions (PostgreSQL)", no_args_is_help=True)


@app.command("ensure")
def ensure_cmd(as_json: bool = JsonOpt) -> None:
    """Create the default partition and the current and next HOOKBAY_PARTITION_AHEAD intervals'
    partitions (serve and worker do this at start and every HOOKBAY_PARTITION_CHECK_SECONDS)."""
    from hookbay.ops import partitions

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        if not await partitions.is_partitioned(store):
            raise partitions.NotPartitioned("The request log is not partitioned (SQLite, or a PostgreSQL "
                                            "database made before 0011: run `hookbay partitions migrate`)")
        return {"created": await partitions.ensure(store, s)}

    run_and_print(go, as_json, lambda out: (f"created {', '.join(out['created'])}" if out["created"]
                                            else "every partition is in place"))


@app.command("list")
def list_cmd(as_json: bool = JsonOpt) -> None:
    """List the partitions with their time range, row count and size on disk."""
    from hookbay.ops import partitions

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return await partitions.list_partitions(store)

    run_and_print(go, as_json, _lines)


def _lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    from hookbay.views import iso

    for r in rows:
        span = f"{iso(r['from_us'])} .. {iso(r['to_us'])}" if r["from_us"] is not None else "(everything else)"
        yield f"{r['name']:22} {span:53} {r['rows']:>12} rows {r['bytes'] / 1048576:>10.1f} MiB"


@app.command("migrate")
def migrate_cmd(
    batch: int = typer.Option(5000, "--batch", min=1, help="Rows copied per transaction"),
    pause: float = typer.Option(0.0, "--pause", min=0, help="Seconds to rest between batches (less load)"),
    as_json: bool = JsonOpt,
) -> None:
    """Move an unpartitioned PostgreSQL request log into the partitioned layout while servers keep
    running: copies in batches, then swaps the tables in one short transaction. Safe to stop and
    run again at any point: it resumes where it stopped."""
    from hookbay.ops import partitions

    def progress(read: int, copied: int) -> None:
        if not as_json:
            typer.echo(f"copied {read} rows", err=True)

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return await partitions.migrate(store, s, batch=batch, pause_s=pause, progress=progress)

    run_and_print(go, as_json, lambda out: (f"migrated: {out['rows']} requests in the partitioned request log"
                                            if out["migrated"] else "the request log is already partitioned"))
