"""The source settings form sends only what its user changed: a hypothesis state machine renders
the form, lets the user edit fields and someone else patch the source meanwhile, submits, and
holds the stored config to a reference model (the user's edits win for the fields they changed,
every other field keeps its latest value, whoever set it)."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hookbay.changes import merge_patch
from hookbay.console.sources import build_patch, field_texts, posted_texts
from hookbay.models import SourceConfig

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "rate": st.none() | st.sampled_from([0.5, 1.0, 5.0, 120.0]),
    "burst": st.none() | st.integers(1, 500),
    "retention_days": st.none() | st.integers(1, 3650),
    "allow_ips": st.lists(st.sampled_from(["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]), unique=True),
    "methods": st.lists(st.sampled_from(["POST", "PUT", "PATCH", "GET"]), min_size=1, unique=True),
    "relay": st.booleans(),
    "required_headers": st.dictionaries(st.sampled_from(["x-a", "x-b"]), st.sampled_from(["1", "two words"])),
    "default_region": st.none() | st.sampled_from(["GB", "NO"]),
}
ORDER = ["POST", "PUT", "PATCH", "GET"]


def _form(texts: dict[str, str]) -> dict[str, str]:
    """What a browser posts for these field texts (checkboxes only when ticked)."""
    form = {k: v for k, v in texts.items() if k not in ("methods", "relay", "sync", "allow_private_destinations")}
    form["checkboxes"] = "1"
    for m in texts.get("methods", "").split(","):
        if m:
            form[f"methods_{m}"] = "on"
    for k in ("relay", "sync", "allow_private_destinations"):
        if texts.get(k) == "on":
            form[k] = "on"
    return form


def _canon(field: str, value: Any) -> Any:
    if field == "methods":
        return sorted(value, key=ORDER.index)  # the form lists methods in its own order
    return value


class SettingsForm(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stored = SourceConfig().model_dump()
        self.model = {f: _canon(f, self.stored[f]) for f in VALUES}
        self.base: dict[str, str] | None = None
        self.texts: dict[str, str] = {}
        self.edited: dict[str, Any] = {}

    @rule()
    def open_form(self) -> None:
        self.base = field_texts(SourceConfig.model_validate(self.stored), admin=True)
        self.texts = dict(self.base)
        self.edited = {}

    @precondition(lambda self: self.base is not None)
    @rule(data=st.data(), field=st.sampled_from(sorted(VALUES)))
    def user_edits(self, data: st.DataObject, field: str) -> None:
        value = _canon(field, data.draw(VALUES[field]))
        shown = field_texts(SourceConfig.model_validate({**self.stored, field: value}), admin=True)
        self.texts[field] = shown[field]
        self.edited[field] = value

    @rule(data=st.data(), field=st.sampled_from(sorted(VALUES)))
    def someone_else_patches(self, data: st.DataObject, field: str) -> None:
        value = _canon(field, data.draw(VALUES[field]))
        self.stored = SourceConfig.model_validate({**self.stored, field: value}).model_dump()  # as a PUT would
        self.model[field] = value

    @precondition(lambda self: self.base is not None)
    @rule()
    def submit(self) -> None:
        assert self.base is not None
        patch, errors = build_patch(self.base, posted_texts(_form(self.texts), admin=True))
        assert errors == {}
        assert set(patch) <= set(self.edited)  # never a field the user left alone
        self.stored = SourceConfig.model_validate(merge_patch(self.stored, patch)).model_dump()
        for field in patch:
            self.model[field] = self.edited[field]
        self.base = None

    @invariant()
    def stored_matches_model(self) -> None:
        for field, value in self.model.items():
            assert _canon(field, self.stored[field]) == value, (field, self.stored[field], value)


SettingsForm.TestCase.settings = settings(max_examples=150, stateful_step_count=20, deadline=None)
TestSettingsForm = SettingsForm.TestCase


def test_unchanged_form_is_an_empty_patch_and_bad_text_is_named() -> None:
    cfg = SourceConfig.model_validate({"rate": 2.5, "allow_ips": ["10.0.0.0/8"], "methods": ["POST", "GET"],
                                       "signature": {"scheme": "github"}, "actions": [{"type": "log"}]})
    base = field_texts(cfg, admin=True)
    same = posted_texts(_form(base), admin=True)
    assert build_patch(base, same) == ({}, {})
    patch, errors = build_patch(base, {**same, "burst": "lots", "sig_scheme": "", "actions": "- [unclosed"})
    assert errors == {"burst": "a whole number", "actions": "not valid YAML at line 1"}
    assert patch == {"signature": None}
    # a header deleted from the textarea is named with null: a merge patch would otherwise keep it
    two = field_texts(SourceConfig.model_validate({"required_headers": {"X-A": "1", "X-B": "2"}}), admin=True)
    assert build_patch(two, {**two, "required_headers": "x-b: 2"}) == ({"required_headers": {"x-a": None, "x-b": "2"}}, {})
    # a client's form never carries the admin-only field, whatever is posted
    assert "allow_private_destinations" not in posted_texts({"allow_private_destinations": "on", "checkboxes": "1"},
                                                            admin=False)
    # a hand-made post names only some fields: the others are not touched
    assert build_patch(base, posted_texts({"rate": "3"}, admin=True)) == ({"rate": 3.0}, {})
