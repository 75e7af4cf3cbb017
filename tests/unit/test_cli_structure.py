"""The CLI package stays readable: no import cycle between its modules (groups import ``common``,
only ``app`` imports the groups), every command says what it does, and the options `source
create` and `source update` share are one declaration."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

import hookbay.cli
from hookbay.cli.app import app
from hookbay.cli.source_options import SourceOptions

CLI_DIR = Path(hookbay.cli.__file__).parent
PACKAGE = "hookbay.cli"


def _cli_imports(path: Path) -> set[str]:
    """The ``hookbay.cli`` modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PACKAGE + ".")}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == PACKAGE:
                found |= {f"{PACKAGE}.{a.name}" for a in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {f"{PACKAGE}.{p.stem}": _cli_imports(p) for p in CLI_DIR.glob("*.py") if p.stem != "__init__"}


def _commands(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        yield from _commands(sub, [*path, name])


def test_the_cli_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert {f"{PACKAGE}.app", f"{PACKAGE}.common", f"{PACKAGE}.sources"} <= set(graph)
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_only_app_imports_the_command_groups() -> None:
    graph = _graph()
    shared = {f"{PACKAGE}.{m}" for m in ("common", "errors", "source_options")}
    for module, imports in graph.items():
        if module != f"{PACKAGE}.app":
            assert imports <= shared, f"{module} imports {sorted(imports - shared)}: only cli/app.py composes groups"
    assert f"{PACKAGE}.app" not in set().union(*graph.values())


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = _graph() | {f"{PACKAGE}.common": {f"{PACKAGE}.sources"}}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        return
    raise AssertionError("a cycle common -> sources -> common was not found")


def test_every_command_and_group_has_help() -> None:
    commands = list(_commands(typer.main.get_command(app), []))
    assert len(commands) > 40
    missing = [" ".join(path) or "hookbay" for path, cmd in commands if not (cmd.help or "").strip()]
    assert not missing, f"commands without help text: {missing}"


def test_source_create_and_update_share_one_declaration_of_their_options() -> None:
    root = typer.main.get_command(app)
    source = root.commands["source"]  # type: ignore[attr-defined]
    create, update = ({p.name: p for p in source.commands[c].params} for c in ("create", "update"))
    shared = [f.name for f in SourceOptions.__dataclass_fields__.values()]
    for name in shared:
        assert (create[name].opts, create[name].secondary_opts, create[name].help) == \
            (update[name].opts, update[name].secondary_opts, update[name].help), name
    # in --help they stand together, in declaration order
    for params in (create, update):
        names = list(params)
        start = names.index(shared[0])
        assert names[start:start + len(shared)] == shared
