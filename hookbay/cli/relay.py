"""CLI for the relay: ``hookbay agent``, ``hookbay source relay-token …`` and ``hookbay source relay-status``.

``commands`` (the agent) joins the root command and ``source_commands`` the ``source`` group (see
``cli/app.py``); the management commands run the use cases in ``ops/relay.py`` on the database, the
agent talks only to a server over HTTP.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer

from hookbay.cli.common import OPT_SOURCE_CLIENT, JsonOpt, run_and_print
from hookbay.ops.access import Principal
from hookbay.settings import Settings
from hookbay.store import Store

relay_token_app = typer.Typer(help="Relay tokens: what `hookbay agent` authenticates with (one source each).",
                              no_args_is_help=True)
commands = typer.Typer()
source_commands = typer.Typer()
source_commands.add_typer(relay_token_app, name="relay-token")

SourceArg = typer.Argument(..., help="Source id, token or name")


@relay_token_app.command("create")
def relay_token_create(ref: str = SourceArg, name: str = typer.Option("agent", help="A label for the token"),
                       client: str = OPT_SOURCE_CLIENT, as_json: bool = JsonOpt) -> None:
    """Create a relay token for a source (printed once; only its hash is stored)."""
    from hookbay.ops import relay as relay_ops  # FastAPI models: loaded only when needed

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return (await relay_ops.create_relay_token(store, Principal.cli(), ref, name, client)).model_dump()

    run_and_print(go, as_json, lambda out: (
        f"{out['id']}  relay token for {out['source_id']} (shown once, store it now): {out['token']}"))


@relay_token_app.command("list")
def relay_token_list(ref: str = SourceArg, client: str = OPT_SOURCE_CLIENT, as_json: bool = JsonOpt) -> None:
    """List a source's relay tokens (never their values)."""
    from hookbay.ops import relay as relay_ops  # FastAPI models: loaded only when needed

    async def go(store: Store, s: Settings) -> list[dict[str, Any]]:
        return [t.model_dump() for t in await relay_ops.list_relay_tokens(store, Principal.cli(), ref, client)]

    run_and_print(go, as_json, lambda rows: (f"{t['id']}  {t['name']}  created {t['created_at']}" for t in rows))


@relay_token_app.command("revoke")
def relay_token_revoke(ref: str = SourceArg, token_id: str = typer.Argument(..., help="Relay token id (rtk_…)"),
                       client: str = OPT_SOURCE_CLIENT, as_json: bool = JsonOpt) -> None:
    """Revoke a relay token; an agent using it is refused at its next request."""
    from hookbay.ops import relay as relay_ops  # FastAPI models: loaded only when needed

    async def go(store: Store, s: Settings) -> dict[str, str]:
        await relay_ops.revoke_relay_token(store, Principal.cli(), ref, token_id, client)
        return {"revoked": token_id}

    run_and_print(go, as_json, lambda out: f"revoked {out['revoked']}")


@source_commands.command("relay-status")
def relay_status_cmd(ref: str = SourceArg, client: str = OPT_SOURCE_CLIENT, as_json: bool = JsonOpt) -> None:
    """Show a relay source's queue: depth, leased messages, the oldest message's age and last error."""
    from hookbay.ops import relay as relay_ops  # FastAPI models: loaded only when needed

    async def go(store: Store, s: Settings) -> dict[str, Any]:
        return (await relay_ops.queue_status(store, Principal.cli(), ref, client)).model_dump()

    run_and_print(go, as_json, _status_lines)


def _status_lines(st: dict[str, Any]) -> Iterator[str]:
    yield f"source:  {st['source_id']}  (relay mode {'on' if st['relay'] else 'off'})"
    age = f", oldest {st['oldest_age_s']:.1f} s old" if st["oldest_age_s"] is not None else ""
    yield f"queue:   {st['depth']} unacked, {st['leased']} leased{age}"
    h = st["head"]
    if h:
        yield (f"head:    #{h['id']} {h['request_id']}  attempts {h['deliveries']}"
               + (f"  leased until {h['leased_until']}" if h["leased_until"] else "")
               + (f"  last error: {h['last_error']}" if h["last_error"] else ""))


@commands.command("agent")
def agent_cmd(
    server: str = typer.Option(..., "--server", envvar="HOOKBAY_AGENT_SERVER",
                               help="The hookbay server's base URL, e.g. https://hooks.example.com"),
    token: str = typer.Option(..., "--token", envvar="HOOKBAY_RELAY_TOKEN",
                              help="Relay token (hbr_…); better passed as HOOKBAY_RELAY_TOKEN"),
    forward: str = typer.Option(..., "--forward", envvar="HOOKBAY_AGENT_FORWARD",
                                help="Local URL each request is sent to, e.g. http://localhost:8080/hook"),
    once: bool = typer.Option(False, "--once", help="Forward what is queued now, then exit (0 when drained)"),
    wait: float = typer.Option(30.0, "--wait", help="Long-poll seconds per pull (the server caps it at 60)"),
    batch: int = typer.Option(10, "--batch", min=1, max=100, help="Messages leased per pull"),
    visibility: float = typer.Option(60.0, "--visibility", min=1,
                                     help="Lease seconds: how long a pulled batch is held before others may take it"),
    max_backoff: float = typer.Option(60.0, "--max-backoff", min=0.1,
                                      help="Longest back-off after failures, seconds"),
    min_backoff: float = typer.Option(1.0, "--min-backoff", min=0.01,
                                      help="First back-off after a failed forward, seconds"),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the local application"),
    state_dir: Path | None = typer.Option(None, "--state-dir", envvar="HOOKBAY_AGENT_STATE_DIR", help=(
        "Where the agent keeps its journal (default $XDG_STATE_HOME/hookbay-agent, else "
        "~/.local/state/hookbay-agent)")),
    journal: Path | None = typer.Option(None, "--journal", envvar="HOOKBAY_AGENT_JOURNAL", help=(
        "The journal file of forwarded-but-unacked messages, replayed on start (default: one per "
        "server and token in the state dir)")),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print no line per forwarded message"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per event, for scripts"),
) -> None:
    """Pull a relay source's queue and forward each request to a local application, in order.

    Exit codes: 0 done (stopped by a signal, or --once drained the queue), 1 --once hit a failed
    forward (the message stays queued), 2 --once could not reach the server, 3 token refused,
    4 another agent holds the journal."""
    from hookbay.relay.agent import AgentConfig, run_agent
    from hookbay.relay.journal import default_journal, default_state_dir

    if not forward.startswith(("http://", "https://")):
        typer.echo("error: --forward must be an http:// or https:// URL", err=True)
        raise typer.Exit(2)
    cfg = AgentConfig(server=server, token=token, forward=forward, once=once, wait=wait, batch=batch,
                      visibility=visibility, min_backoff=min_backoff, max_backoff=max_backoff,
                      forward_timeout=timeout,
                      journal=journal or default_journal(state_dir or default_state_dir(), server, token))

    def emit(ev: dict[str, Any]) -> None:
        if quiet and ev["event"] == "forwarded":
            return
        if as_json:
            sys.stdout.write(orjson.dumps({**ev, "ts": round(time.time(), 3)}).decode() + "\n")
        else:
            sys.stdout.write(_human(ev) + "\n")
        sys.stdout.flush()

    code = asyncio.run(run_agent(cfg, emit))
    raise typer.Exit(code)


def _human(ev: dict[str, Any]) -> str:
    kind = ev["event"]
    if kind == "forwarded":
        return f"forwarded #{ev['message_id']} {ev['request_id']} -> {ev['status']} ({ev['ms']} ms)"
    if kind == "forward_failed":
        return (f"failed    #{ev['message_id']} {ev['request_id']}: {ev['error']}; "
                f"retrying in {ev['retry_in_s']} s")
    if kind == "started":
        return f"hookbay agent: pulling {ev['server']} -> forwarding to {ev['forward']}"
    if kind == "stopped":
        return f"stopped: {ev['forwarded']} forwarded, {ev['failed']} failed attempts"
    if kind == "server_unreachable":
        return f"server unreachable during {ev['during']} ({ev['error']}); retrying in {ev['retry_in_s']} s"
    if kind == "reconnected":
        return "reconnected to the server"
    rest = " ".join(f"{k}={v}" for k, v in ev.items() if k != "event")
    return f"{kind}: {rest}"
