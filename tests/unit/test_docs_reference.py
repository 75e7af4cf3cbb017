"""The reference pages in docs/reference/ against the code they describe, so a setting, command,
option, metric or route cannot be added, renamed or removed without its page following.

The pages are committed files (scripts/gen_reference.py writes the CLI and metrics tables); these
tests read them as they are and compare with the code, not with the script's output."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hookbay.settings import NON_SETTING_NAMES, NON_SETTING_PREFIXES, Settings

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "docs" / "reference"


def cli_app() -> Any:
    """The Typer app of the ``hookbay`` command (the one line to change if it moves)."""
    from hookbay.cli.app import app

    return app


def admin_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """Every (method, path) of the admin API's route table; building the app opens no database."""
    from hookbay.server.app import HookbayApp

    app = HookbayApp(Settings(data_dir=tmp_path, database_url=""))
    return {(m, r.path) for r in app.admin.routes for m in (getattr(r, "methods", None) or ()) if m != "HEAD"}


def _sections(text: str, level: str) -> dict[str, str]:
    """Heading text -> the text up to the next heading of the same level."""
    parts = re.split(rf"^{level} (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _rows(text: str) -> list[list[str]]:
    """Table body rows as cells (separator and header rows dropped; ``\\|`` is not a cell border)."""
    lines = text.splitlines()
    sep = re.compile(r"^\|[-| :]+\|$")
    out = []
    for i, line in enumerate(lines):
        header = i + 1 < len(lines) and sep.match(lines[i + 1])
        if line.startswith("|") and not sep.match(line) and not header:
            out.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return out


# --- configuration ---------------------------------------------------------------------------------

OTHER_VARIABLES = "Other environment variables"


def _config_rows() -> tuple[list[list[str]], list[list[str]]]:
    """(rows of the settings tables, rows of the table of other variables)."""
    sections = _sections((REF / "configuration.md").read_text(), "##")
    settings, other = [], []
    for title, body in sections.items():
        rows = [r for r in _rows(body) if r and r[0].startswith("`HOOKBAY_")]
        (other if title == OTHER_VARIABLES else settings).extend(rows)
    return settings, other


def _env_name(cell: str) -> str:
    return cell.strip("`")


def _default_text(value: object) -> str:
    """A default as the page writes it: what one would put in the variable to get it."""
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path) and value.is_relative_to(Path.home()):
        return f"`~/{value.relative_to(Path.home())}`"
    return f"`{value}`"


def test_configuration_reference_lists_every_setting_once_and_nothing_else() -> None:
    settings, _ = _config_rows()
    documented = Counter(_env_name(r[0]) for r in settings)
    expected = {"HOOKBAY_" + name.upper() for name in Settings.model_fields}
    assert not [n for n, k in documented.items() if k > 1], "documented twice"
    assert not expected - set(documented), "settings missing from docs/reference/configuration.md"
    assert not set(documented) - expected, "documented as settings but not in hookbay.settings.Settings"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_configuration_reference_gives_each_default_as_the_code_has_it(name: str) -> None:
    settings, _ = _config_rows()
    row = next((r for r in settings if _env_name(r[0]) == "HOOKBAY_" + name.upper()), None)
    assert row is not None, f"HOOKBAY_{name.upper()} is not documented"
    assert len(row) == 3 and row[2], f"HOOKBAY_{name.upper()}: a row needs variable, default and meaning"
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    assert row[1] == _default_text(default), f"HOOKBAY_{name.upper()}: the code's default is {default!r}"


def test_other_variables_are_really_not_settings() -> None:
    """The table of other variables holds only names the unknown-setting warning leaves alone."""
    _, other = _config_rows()
    provider = str(Settings.model_fields["secret_env_prefix"].default)
    assert other
    for row in other:
        name = _env_name(row[0]).removesuffix("…")
        assert name not in {"HOOKBAY_" + f.upper() for f in Settings.model_fields}, f"{name} is a setting"
        assert (name in NON_SETTING_NAMES or name.startswith(NON_SETTING_PREFIXES)
                or name.startswith(provider)), f"{name} would be reported as an unknown setting"


def test_source_settings_table_lists_every_config_key() -> None:
    """docs/sources.md lists a source's ``config`` keys; a key added to ``SourceConfig`` needs a row."""
    from hookbay.models import SourceConfig

    body = _sections((ROOT / "docs" / "sources.md").read_text(), "##")["Source settings"]
    documented = {k for row in _rows(body) if row for k in re.findall(r"`(\w+)`", row[0])}
    assert documented == set(SourceConfig.model_fields), (
        sorted(set(SourceConfig.model_fields) - documented), sorted(documented - set(SourceConfig.model_fields)))


# --- CLI -----------------------------------------------------------------------------------------

def _app_commands() -> dict[str, Any]:
    """Command path ("hookbay source create") -> click command, for every visible command."""
    import typer.main

    out: dict[str, Any] = {}

    def walk(cmd: Any, path: str) -> None:
        out[path] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            if not sub.hidden:
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(cli_app()), "hookbay")
    return out


def _doc_commands() -> dict[str, str]:
    text = (REF / "cli.md").read_text()
    return {m.group(1): body for title, body in _sections(text, "###").items()
            if (m := re.fullmatch(r"`(hookbay(?: [\w-]+)*)`", title))}


def test_cli_reference_lists_every_command_and_nothing_else() -> None:
    app, doc = set(_app_commands()), set(_doc_commands())
    assert not app - doc, "commands missing from docs/reference/cli.md"
    assert not doc - app, "documented commands that the CLI does not have"


def test_cli_reference_lists_every_option_of_each_command() -> None:
    docs = _doc_commands()
    for path, cmd in _app_commands().items():
        params = [p for p in cmd.params if not getattr(p, "hidden", False)]
        options = {o for p in params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
        documented = {o for row in _rows(docs[path]) for o in re.findall(r"(?<![\w-])--?[a-z][\w-]*", row[0])}
        assert documented == options, (path, sorted(options - documented), sorted(documented - options))
        for arg in (p for p in params if p.param_type_name == "argument"):
            assert arg.name.upper() in docs[path], f"{path}: argument {arg.name} is not in its usage line"


# --- metrics -------------------------------------------------------------------------------------

def _registry_metrics() -> dict[str, tuple[str, set[str]]]:
    """Exposed name -> (type, label names) for every family in hookbay's registry."""
    from hookbay import metrics

    wrapper_labels = {c._name: set(c._labelnames) for c in metrics.registry._collector_to_names
                      if hasattr(c, "_name") and hasattr(c, "_labelnames")}
    out = {}
    for fam in metrics.registry.collect():
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = (fam.type, wrapper_labels.get(fam.name, set(getattr(fam, "_labelnames", ()) or ())))
    return out


def test_metrics_reference_lists_every_metric_with_its_type_and_labels() -> None:
    rows = [r for r in _rows((REF / "metrics.md").read_text()) if r and r[0].startswith("`hookbay_")]
    documented = {r[0].strip("`"): (r[1], set(re.findall(r"`(\w+)`", r[2]))) for r in rows}
    code = _registry_metrics()
    assert len(rows) == len(documented), "a metric is documented twice"
    assert not set(code) - set(documented), "metrics missing from docs/reference/metrics.md"
    assert not set(documented) - set(code), "documented metrics that hookbay/metrics.py does not define"
    assert documented == code


# --- HTTP API ------------------------------------------------------------------------------------

def test_api_reference_lists_every_admin_route_and_nothing_else(tmp_path: Path) -> None:
    """The first cell of a table row names one route, as the route table writes it."""
    route = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/(?:api/v1|docs)/[^`?\s]*)`")
    documented = {m for row in _rows((REF / "api.md").read_text()) if row for m in route.findall(row[0])}
    routes = admin_routes(tmp_path)
    assert not routes - documented, f"missing from docs/reference/api.md: {sorted(routes - documented)}"
    assert not documented - routes, f"documented but not in the admin API: {sorted(documented - routes)}"


# --- links ---------------------------------------------------------------------------------------

def _anchors(md: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: Counter[str] = Counter()
    out = set()
    text = re.sub(r"^```.*?^```", "", md, flags=re.M | re.S)
    for title in re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        out.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return out


DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    """The split moved sections between files: every relative link must still land on a file and,
    with a ``#fragment``, on a heading of it."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, frag = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.relative_to(ROOT)}: link to missing {target}"
        if frag and dest.suffix == ".md":
            assert frag in _anchors(dest.read_text()), f"{page.relative_to(ROOT)}: no heading for {target}"
