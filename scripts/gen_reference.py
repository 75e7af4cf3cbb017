"""Regenerate the generated parts of docs/reference/cli.md and docs/reference/metrics.md.

    python scripts/gen_reference.py          # rewrite the generated regions
    python scripts/gen_reference.py --check  # exit 1 if a region is out of date

Only the text between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->`` is
written, so the prose around it is kept. The CLI part is what ``--help`` prints for every command
(the Typer app walked through click); the metrics part is every family in hookbay's registry.
tests/unit/test_docs_reference.py checks the committed pages against the code without this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"
METRICS_PAGE = ROOT / "docs" / "reference" / "metrics.md"


# Descriptions for options whose declaration has no help text (they print none in --help); kept
# here rather than in the command modules, which are being reorganised. Marked with a dagger
# in the page; an entry is ignored once its option has help text of its own.
_TIME = "ISO-8601 time or relative (15m, 2h, 3d)"
EXTRA_HELP: dict[tuple[str, str], str] = {
    ("replay", "--source"): "Source id, token or name",
    ("replay", "--since"): "Received at or after; " + _TIME,
    ("replay", "--until"): "Received before; " + _TIME,
    ("source update", "--name"): "New display name, unique per client",
    ("source update", "--enable"): "Enable or disable the source",
    ("source update", "--allow-method"): "Allowed method (repeatable); replaces the list",
    ("source update", "--max-body"): "Body size limit in bytes",
    ("source update", "--idempotency-header"): "Extra header naming a delivery id",
    ("source update", "--default-region"): "Region for phone numbers without +code, e.g. GB",
    ("source update", "--sync"): "Parse before answering (as ?wait=1), or not",
    ("source update", "--remove-api-key"): "Stop requiring an API key",
    ("requests", "--until"): "Received before; " + _TIME,
    ("requests export", "--until"): "Received before; " + _TIME,
    ("requests export", "--verdict"): "accepted|rejected|duplicate",
    ("requests export", "--state"): "pending|processed|failed|rejected|duplicate",
    ("profiles find", "--email"): "Email address (normalised as incoming contacts are)",
    ("profiles find", "--phone"): "Phone number (normalised to E.164 as incoming contacts are)",
    ("profiles find", "--client"): "Only this client's profiles",
    ("deliveries list", "--until"): "Created before; " + _TIME,
    ("deliveries retry", "--since"): "Dead letters created at or after; " + _TIME,
    ("deliveries retry", "--until"): "Dead letters created before; " + _TIME,
}


def cli_app() -> Any:
    """The Typer app of the ``hookbay`` command (the one line to change if it moves)."""
    from hookbay.cli.app import app

    return app


def _commands(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        if not sub.hidden:
            yield from _commands(sub, [*path, name])


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_cli() -> str:
    import typer.main

    root = typer.main.get_command(cli_app())
    out: list[str] = []
    for path, cmd in _commands(root, ["hookbay"]):
        ctx = cmd.context_class(cmd, info_name=path[-1])
        params = [p for p in cmd.params if not getattr(p, "hidden", False)]
        args = [p for p in params if p.param_type_name == "argument"]
        usage = " ".join(path)
        if getattr(cmd, "commands", None):
            usage += " [OPTIONS] COMMAND" if not getattr(cmd, "invoke_without_command", False) \
                else " [OPTIONS] [COMMAND]"
        else:
            usage += " [OPTIONS]"
        for a in args:
            name = a.name.upper() + ("..." if a.nargs == -1 else "")
            usage += f" {name}" if a.required else f" [{name}]"
        out += [f"### `{' '.join(path)}`", "", f"`{usage}`", ""]
        for para in (cmd.help or "").split("\n\n"):
            if para.strip():
                out += [" ".join(para.split()), ""]
        subs = [(n, s) for n, s in getattr(cmd, "commands", {}).items() if not s.hidden]
        if subs:
            out += ["Commands: " + ", ".join(f"`{n}`" for n, _ in subs) + ".", ""]
        rows = []
        for p in params:
            record = p.get_help_record(ctx)
            if not record:
                continue
            opt, help_ = record
            extra = EXTRA_HELP.get((" ".join(path[1:]), p.opts[0]))
            if extra and not getattr(p, "help", None):  # once the option has help text, that wins
                help_ = f"{extra}† {help_}".strip()
            rows.append(f"| `{_cell(opt)}` | {_cell(help_)} |")
        if rows:
            out += ["| option or argument | |", "|---|---|", *rows, ""]
    return "\n".join(out).rstrip() + "\n"


def render_metrics() -> str:
    from hookbay import metrics

    labels_of = {c._name: tuple(c._labelnames) for c in metrics.registry._collector_to_names
                 if hasattr(c, "_labelnames") and hasattr(c, "_name")}
    out = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for fam in metrics.registry.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = labels_of.get(fam.name, getattr(fam, "_labelnames", ()) or ())
        label_text = ", ".join(f"`{n}`" for n in labels) or "—"
        out.append(f"| `{name}` | {fam.type} | {label_text} | {_cell(fam.documentation)} |")
    return "\n".join(out) + "\n"


def _replace(page: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(page):
        raise SystemExit(f"{name}: markers {begin} / {end} not found")
    return pattern.sub(lambda _: f"{begin}\n{body}{end}", page)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether the pages are up to date")
    args = ap.parse_args()
    stale = []
    for page, name, render in ((CLI_PAGE, "cli", render_cli), (METRICS_PAGE, "metrics", render_metrics)):
        old = page.read_text()
        new = _replace(old, name, render())
        if new != old:
            stale.append(str(page.relative_to(ROOT)))
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print("out of date: " + ", ".join(stale) + " (run python scripts/gen_reference.py)", file=sys.stderr)
        return 1
    for s in stale:
        print(f"wrote {s}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
