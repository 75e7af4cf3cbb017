"""merge_fields was rewritten for speed; it must behave exactly like the original, kept here."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hookbay.profiles import SET_FIELDS, merge_fields


def reference_merge_fields(
    fields: dict[str, Any], contact: dict[str, Any], at: int, request_id: str, source_id: str | None
) -> bool:
    changed = False
    for name, value in contact.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        cur = fields.get(name)
        if name in SET_FIELDS and isinstance(value, list):
            old = list(cur["value"]) if cur else []
            merged = old + [v for v in value if v not in old]
            if cur is None or merged != old:
                fields[name] = {"value": merged, "at": max(at, cur["at"]) if cur else at,
                                "request_id": request_id, "source_id": source_id}
                changed = True
            continue
        if cur is None or at >= cur["at"]:
            if cur is None or cur["value"] != value or cur["request_id"] != request_id:
                fields[name] = {"value": value, "at": at, "request_id": request_id, "source_id": source_id}
                changed = True
    return changed


names = st.sampled_from(["email", "first_name", "phone", "address", "provider_type", *sorted(SET_FIELDS)])
values = st.one_of(
    st.none(), st.just(""), st.just([]), st.just({}), st.just(0), st.just(False), st.integers(-2, 2),
    st.sampled_from(["a", "b", "A"]), st.lists(st.sampled_from(["x", "y", "z", "x"]), max_size=4),
    st.dictionaries(st.sampled_from(["city", "zip"]), st.sampled_from(["1", "2"]), max_size=2),
)
contacts = st.dictionaries(names, values, max_size=8)
events = st.tuples(contacts, st.integers(0, 5), st.sampled_from(["r1", "r2", "r3"]), st.sampled_from([None, "s1"]))


@settings(max_examples=1500, deadline=None)
@given(st.lists(events, min_size=1, max_size=6))
def test_same_as_reference(history: list[tuple[dict[str, Any], int, str, str | None]]) -> None:
    ours: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    for contact, at, rid, sid in history:
        got = _outcome(merge_fields, ours, copy.deepcopy(contact), at, rid, sid)
        want = _outcome(reference_merge_fields, ref, copy.deepcopy(contact), at, rid, sid)
        assert got == want
        assert ours == ref


def _outcome(fn: Any, *args: Any) -> object:
    try:
        return fn(*args)
    except Exception as e:  # e.g. a set field that holds a scalar: both must fail alike
        return type(e)
