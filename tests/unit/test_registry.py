"""Action types and signature schemes are plug-ins: whatever their registries list is what the config
schema accepts, what the API, CLI and console offer and what the docs describe, so adding one is a
module plus a registry line (and a paragraph of docs, which this test asks for)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from hookbay.actions.base import ActionConfig
from hookbay.actions.registry import ACTION_TYPES, ACTIONS
from hookbay.api.deliveries import ACTIONS as API_ACTION_PATTERN
from hookbay.cli.app import app
from hookbay.console.sources import SCHEMES as CONSOLE_SCHEMES
from hookbay.models import SignatureConfig, SourceConfig
from hookbay.signatures.registry import REGISTRY, SCHEMES

ROOT = Path(__file__).resolve().parents[2]
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])


def _cli_help(*path: str, option: str) -> str:
    """The help text of ``hookbay <path> <option>`` as Typer built it (not the rendered, width-cut table)."""
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    [param] = [p for p in cmd.params if option in getattr(p, "opts", ())]
    return str(param.help or "")


def test_the_registries_list_every_action_type_and_scheme_once() -> None:
    assert ACTION_TYPES == ("email", "mailchimp", "forward", "log")
    assert SCHEMES == ("standard", "github", "stripe", "shopify", "woocommerce", "slack", "hmac")
    assert all(cls.model_fields["type"].annotation.__args__ == (name,) for name, cls in ACTIONS.items())
    assert all(s.name == name for name, s in REGISTRY.items())


@pytest.mark.parametrize("name", ACTION_TYPES)
def test_an_action_type_is_accepted_offered_and_documented(name: str) -> None:
    schema = SourceConfig.model_json_schema()
    assert name in schema["properties"]["actions"]["items"]["discriminator"]["mapping"]
    cls = ACTIONS[name]
    assert cls.destination is not ActionConfig.destination and cls.execute is not ActionConfig.execute
    assert re.fullmatch(API_ACTION_PATTERN, name)  # GET /api/v1/deliveries?action_type=...
    assert name in _cli_help("deliveries", "list", option="--action").split("|")
    assert re.search(rf"type: {name}\b", DOCS) and f"**{name}**" in DOCS


def test_an_unregistered_action_type_is_refused_everywhere() -> None:
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        SourceConfig.model_validate({"actions": [{"type": "sms"}]})
    assert not re.fullmatch(API_ACTION_PATTERN, "sms")


@pytest.mark.parametrize("name", SCHEMES)
def test_a_signature_scheme_is_accepted_offered_and_documented(name: str) -> None:
    assert name in SignatureConfig.model_json_schema()["properties"]["scheme"]["enum"]
    assert name in _cli_help("source", "create", option="--signature").split(" ")[0].split("|")
    # the console form offers a name and a secret: every scheme that needs nothing more
    assert (name in CONSOLE_SCHEMES) is not REGISTRY[name].configurable
    assert f"| `{name}`" in DOCS


def test_an_unregistered_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="Input should be 'standard', 'github'"):
        SignatureConfig.model_validate({"scheme": "paypal"})
