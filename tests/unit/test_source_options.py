"""The options `source create` and `source update` share: on create they apply to the defaults, on
update to the stored config, and an update changes only the settings its options name."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookbay.cli.source_options import SourceOptions
from hookbay.models import SourceConfig

STORED = SourceConfig.model_validate({
    "format": "json", "parser": "contact", "methods": ["POST", "PUT"], "max_body_bytes": 1000,
    "idempotency_header": "X-Id", "default_region": "GB", "sync": True, "allow_ips": ["10.0.0.0/8"],
    "required_headers": {"x-token": "abc"}, "rate": 5.0, "burst": 10, "retention_days": 30,
    "allow_private_destinations": True, "relay": True,
    "signature": {"scheme": "hmac", "header": "X-Sig", "algorithm": "sha1", "encoding": "base64",
                  "prefix": "sha1=", "tolerance_s": 60},
}).model_dump()

# Which stored settings each option may change; everything else must stay as stored.
TOUCHES = {"fmt": "format", "method": "methods", "max_body": "max_body_bytes", "idempotency_header": "idempotency_header",
           "parser": "parser", "region": "default_region", "sync": "sync", "signature": "signature",
           "signature_header": "signature", "algorithm": "signature", "encoding": "signature", "prefix": "signature",
           "tolerance": "signature", "allow_ip": "allow_ips", "require_header": "required_headers", "rate": "rate",
           "burst": "burst", "retention_days": "retention_days", "allow_private": "allow_private_destinations",
           "relay": "relay"}

# What each option, given alone, makes the stored setting.
EXPECT = {"fmt": lambda v: v, "method": lambda v: [m.upper() for m in v], "max_body": lambda v: v,
          "idempotency_header": lambda v: v or None, "parser": lambda v: v, "region": lambda v: v.upper() or None,
          "sync": lambda v: v, "allow_ip": lambda v: [] if v == ["none"] else v,
          "require_header": lambda v: dict(h.split(": ") for h in v if h != "none"), "rate": lambda v: v or None,
          "burst": lambda v: v or None, "retention_days": lambda v: v or None, "allow_private": lambda v: v,
          "relay": lambda v: v}
SIGNATURE_KEY = {"signature_header": "header", "algorithm": "algorithm", "encoding": "encoding", "prefix": "prefix",
                 "tolerance": "tolerance_s"}

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "fmt": st.sampled_from(["auto", "json", "ndjson", "xml", "csv", "form"]),
    "method": st.lists(st.sampled_from(["post", "PUT", "patch", "GET"]), min_size=1, max_size=3, unique=True),
    "max_body": st.integers(1, 64 * 1024 * 1024),
    "idempotency_header": st.sampled_from(["", "X-Delivery", "Idempotency-Key"]),
    "parser": st.sampled_from(["generic", "contact"]),
    "region": st.sampled_from(["", "us", "DE"]),
    "sync": st.booleans(),
    "signature": st.sampled_from(["hmac", "none"]),
    "signature_header": st.sampled_from(["X-Other", "X-Hub-Signature"]),
    "algorithm": st.sampled_from(["sha1", "sha256", "sha512"]),
    "encoding": st.sampled_from(["hex", "base64"]),
    "prefix": st.sampled_from(["", "sha256="]),
    "tolerance": st.integers(1, 86400),
    "allow_ip": st.sampled_from([["none"], ["192.168.0.0/16"], ["10.1.0.0/16", "2001:db8::/32"]]),
    "require_header": st.sampled_from([["none"], ["x-a: 1"], ["x-a: 1", "x-b: two"]]),
    "rate": st.sampled_from([0.0, 0.5, 100.0]),
    "burst": st.sampled_from([0, 1, 50]),
    "retention_days": st.sampled_from([0, 1, 3650]),
    "allow_private": st.booleans(),
    "relay": st.booleans(),
}


@st.composite
def some_options(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(VALUES)), unique=True, max_size=6))
    return {n: draw(VALUES[n]) for n in names}


def test_every_shared_option_is_covered() -> None:
    assert {f.name for f in dataclasses.fields(SourceOptions)} == set(VALUES) | {"mapping_file", "actions"}


def test_nothing_given_is_the_defaults_on_create_and_no_change_on_update() -> None:
    assert not SourceOptions().named()
    assert SourceOptions().config({}) == SourceConfig().model_dump()
    assert SourceOptions().config(STORED) == STORED


@given(some_options())
def test_update_changes_only_what_it_names(given_opts: dict[str, Any]) -> None:
    opts = SourceOptions(**given_opts)
    assert opts.named() == bool(given_opts)
    new = opts.config(STORED)
    touched = {TOUCHES[n] for n in given_opts}
    assert {k: v for k, v in new.items() if k not in touched} == {k: v for k, v in STORED.items() if k not in touched}
    for name, value in given_opts.items():
        if name in EXPECT:
            assert new[TOUCHES[name]] == EXPECT[name](value), name
        elif name in SIGNATURE_KEY and given_opts.get("signature") != "none":
            assert new["signature"][SIGNATURE_KEY[name]] == value, name
    if given_opts.get("signature") == "none":
        assert new["signature"] is None


@pytest.mark.parametrize("name", sorted(VALUES))
def test_each_option_alone_counts_as_named(name: str) -> None:
    """Zero and false values too: `--rate 0` removes the limit, `--no-allow-private-destinations`
    closes the private network again; neither may be dropped as "nothing given"."""
    falsy = {"rate": 0.0, "burst": 0, "retention_days": 0, "tolerance": 0, "allow_private": False, "relay": False,
             "sync": False, "idempotency_header": "", "region": "", "prefix": "", "signature": ""}
    assert SourceOptions(**{name: falsy.get(name, "x")}).named()


def test_file_options_read_the_files(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("version: 1\ntarget: record\nfields:\n  f: {constant: 1}\n")
    actions = tmp_path / "a.yaml"
    actions.write_text("actions: []\n")
    created = SourceOptions(mapping_file=mapping).config({})
    assert created["parser"] == "mapping" and created["mapping"]
    updated = SourceOptions(mapping_file=mapping, actions=actions).config(STORED)
    assert updated["mapping"] == created["mapping"] and updated["parser"] == "contact" and updated["actions"] == []
    assert {k: v for k, v in updated.items() if k not in ("mapping", "actions")} == \
        {k: v for k, v in STORED.items() if k not in ("mapping", "actions")}
