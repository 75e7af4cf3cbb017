from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookbay.actions.conditions import MAX_DEPTH, MAX_LENGTH, Condition, ConditionError, compile_condition

CONTACT: dict[str, Any] = {
    "source_name": "shop",
    "email": "ada@example.com",
    "email_permission": True,
    "sms_permission": False,
    "provider_type": 3,
    "score": 7.5,
    "first_name": "",
    "middle_name": None,
    "address": {"city": "Oslo", "zip": "0150", "geo": {"lat": 59.9}},
    "list_ids": ["a1", "b2"],
    "interests": ["ski", "tea"],
    "activities": [],
    "signup": "2024-03-01",
}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # bare operands: present and truthy
        ("EmailPermission", True),
        ("SMSPermission", False),
        ("FirstName", False),
        ("MiddleName", False),
        ("Nope", False),
        ("Activities", False),
        ("Interests", True),
        ("true", True),
        ("null", False),
        # ==
        ("EmailPermission == true", True),
        ("EmailPermission == false", False),
        ("ProviderType == 3", True),
        ("ProviderType == 3.0", True),
        ("ProviderType == 7", False),
        ("Email == 'ada@example.com'", True),
        ('Email == "ADA@example.com"', False),
        ("3 == ProviderType", True),
        ("ListIds == ['a1', 'b2']", True),
        ("ListIds == ['b2', 'a1']", False),
        ("Address == Address", True),
        # !=
        ("ProviderType != 7", True),
        ("ProviderType != 3", False),
        ("Nope != 3", True),
        ("SMSPermission != true", True),
        # ordering
        ("ProviderType < 4", True),
        ("ProviderType <= 3", True),
        ("ProviderType > 3", False),
        ("ProviderType >= 3", True),
        ("Score > 7", True),
        ("Signup >= '2024-01-01'", True),
        ("Signup < '2024-01-01'", False),
        ("'b' > 'a'", True),
        # in / contains
        ("ProviderType in [3, 7]", True),
        ("ProviderType in [1, 2]", False),
        ("'a1' in ListIds", True),
        ("'zz' in ListIds", False),
        ("'example' in Email", True),
        ("'city' in Address", True),
        ("'CITY' in Address", True),
        ("'street' in Address", False),
        ("ListIds contains 'b2'", True),
        ("Email contains '@'", True),
        ("Interests contains 'coffee'", False),
        ("Address contains 'zip'", True),
        ("[] contains 1", False),
        ("null in [1, null]", True),
        # exists
        ("exists(Email)", True),
        ("exists(MiddleName)", True),
        ("exists(Nope)", False),
        ("exists(address.geo.lat)", True),
        ("exists(address.geo.lon)", False),
        ("not exists(Nope)", True),
        ("exists(Nope) == false", True),
        # and / or / not
        ("EmailPermission == true and ProviderType == 3", True),
        ("EmailPermission == true and ProviderType == 7", False),
        ("SMSPermission or ProviderType == 3", True),
        ("SMSPermission or Nope", False),
        ("not SMSPermission", True),
        ("not not EmailPermission", True),
        ("(SMSPermission or EmailPermission) and ProviderType == 3", True),
        ("EmailPermission == true AND ProviderType == 3 OR false", True),
        ("NOT SMSPermission", True),
        ("EmailPermission == TRUE", True),
    ],
)
def test_operators(text: str, want: bool) -> None:
    assert compile_condition(text).evaluate(CONTACT) is want


@pytest.mark.parametrize(
    ("a", "b", "c", "want"),
    [
        # not a or b and c  ==  (not a) or (b and c)
        (False, False, False, True),
        (True, False, False, False),
        (True, True, False, False),
        (True, False, True, False),
        (True, True, True, True),
        (False, True, True, True),
    ],
)
def test_precedence(a: bool, b: bool, c: bool, want: bool) -> None:
    record = {"a": a, "b": b, "c": c}
    assert compile_condition("not a or b and c").evaluate(record) is want
    assert compile_condition("(not a) or (b and c)").evaluate(record) is want


def test_precedence_not_binds_tighter_than_comparison_groups() -> None:
    # `not` applies to the whole comparison that follows it
    assert compile_condition("not x == 1").evaluate({"x": 2}) is True
    assert compile_condition("not (a or b)").evaluate({"a": False, "b": True}) is False


@pytest.mark.parametrize(
    "name",
    [
        "EmailPermission",
        "emailpermission",
        "EMAIL_PERMISSION",
        "email_permission",
        "Email_Permission",
        "e_mail_permission",
    ],
)
def test_names_ignore_case_and_underscores(name: str) -> None:
    assert compile_condition(f"{name} == true").evaluate({"email_permission": True})
    assert compile_condition(f"{name} == true").evaluate({"EmailPermission": True})


def test_exact_key_wins_over_normalised_match() -> None:
    record = {"email_permission": False, "EmailPermission": True}
    assert compile_condition("EmailPermission").evaluate(record)
    assert not compile_condition("email_permission").evaluate(record)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("address.city == 'Oslo'", True),
        ("Address.City == 'Oslo'", True),
        ("address.geo.lat > 59", True),
        ("address.geo.lat.deeper", False),
        ("address.street == 'x'", False),
        ("address.city.name", False),
        ("list_ids.0 == 'a1'", True),
        ("list_ids.1 == 'b2'", True),
        ("list_ids.2 == 'c3'", False),
        ("email.0", False),  # strings are not indexable
        ("nope.city == null", True),
    ],
)
def test_nested_paths(text: str, want: bool) -> None:
    assert compile_condition(text).evaluate(CONTACT) is want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Nope == 3", False),
        ("Nope == null", True),
        ("Nope != null", False),
        ("MiddleName == null", True),
        ("Nope < 3", False),
        ("Nope >= 3", False),
        ("Nope in [1]", False),
        ("Nope contains 'x'", False),
        ("'x' in Nope", False),
    ],
)
def test_missing_fields(text: str, want: bool) -> None:
    assert compile_condition(text).evaluate(CONTACT) is want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("ProviderType == '3'", False),
        ("ProviderType != '3'", True),
        ("ProviderType < '4'", False),
        ("Email > 3", False),
        ("EmailPermission == 1", False),
        ("SMSPermission == 0", False),
        ("EmailPermission > false", False),
        ("Address < 3", False),
        ("ListIds < ListIds", False),
        ("3 in Email", False),
        ("ProviderType contains 3", False),
        ("ListIds contains ['a1']", False),
        ("Address == [1]", False),
        ("null < 1", False),
    ],
)
def test_type_mismatches_are_false(text: str, want: bool) -> None:
    assert compile_condition(text).evaluate(CONTACT) is want


def test_odd_values_do_not_raise() -> None:
    record = {"d": Decimal("NaN"), "s": Decimal("sNaN"), "n": float("nan"), "o": object()}
    for text in ("d < 1", "d == 1", "s == 1", "s > 1", "n == n", "n < 1", "o == o", "o < 1", "o in [1]", "o"):
        assert isinstance(compile_condition(text).evaluate(record), bool)
    assert compile_condition("x").evaluate("not a mapping") is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("", 0, "empty"),
        ("   ", 3, "empty"),
        ("a ==", 4, "after '=='"),
        ("a = 1", 2, "use '=='"),
        ("a && b", 2, "use 'and'"),
        ("a || b", 2, "use 'or'"),
        ("!a", 0, "use 'not'"),
        ("(a", 2, "expected ')'"),
        ("a)", 1, "unexpected ')'"),
        ("a b", 2, "unexpected field 'b'"),
        ("a == b == c", 7, "unexpected '=='"),
        ("'abc", 0, "unterminated string"),
        ('x == "a\\q"', 7, "unknown escape"),
        ("x == 1x", 5, "malformed number"),
        ("x == 1.", 5, "malformed number"),
        ("a.", 2, "field name after '.'"),
        ("foo(a)", 0, "unknown function 'foo'"),
        ("exists(1)", 7, "exists() takes a field"),
        ("exists(a", 8, "expected ')'"),
        ("x in [1, 2", 10, "expected ',' or ']'"),
        ("x in [1 2]", 8, "expected ',' or ']'"),
        ("and", 0, "expected a field"),
        ("a and", 5, "expected a field"),
        ("not", 3, "expected a field"),
        ("x == -", 5, "unexpected character '-'"),
        ("x $ 1", 2, "unexpected character '$'"),
    ],
)
def test_syntax_errors(text: str, position: int, fragment: str) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(text)
    err = info.value
    assert err.position == position, str(err)
    assert fragment in err.message
    assert f"position {position}" in str(err)
    assert isinstance(err, ValueError)


def test_length_limit() -> None:
    ok = "a or " * 199 + "a"
    assert len(ok) <= MAX_LENGTH
    compile_condition(ok)
    with pytest.raises(ConditionError, match="too long"):
        compile_condition("a" * (MAX_LENGTH + 1))


def test_depth_limit() -> None:
    assert compile_condition("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH).evaluate({"a": 1})
    assert compile_condition("not " * MAX_DEPTH + "a").evaluate({"a": 1}) is (MAX_DEPTH % 2 == 0)
    with pytest.raises(ConditionError, match="nested too deeply") as info:
        compile_condition("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert info.value.position == MAX_DEPTH
    with pytest.raises(ConditionError, match="nested too deeply"):
        compile_condition("x in " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_literals_and_escapes() -> None:
    record = {"s": 'it\'s "q"\n', "n": -2.5, "e": 1000.0, "z": 0}
    assert compile_condition("s == 'it\\'s \"q\"\\n'").evaluate(record)
    assert compile_condition('s == "it\'s \\"q\\"\\n"').evaluate(record)
    assert compile_condition("n == -2.5 and e == 1e3 and z == 0 and n < -2").evaluate(record)
    assert compile_condition("[1, 'a', [true, null],] == [1, 'a', [true, null]]").evaluate({})


def test_condition_object() -> None:
    cond = compile_condition("EmailPermission == true")
    assert isinstance(cond, Condition)
    assert cond.source == "EmailPermission == true"
    assert cond == compile_condition("EmailPermission == true")
    assert "EmailPermission" in repr(cond)
    # reusable and independent of the record it saw last
    assert cond.evaluate({"email_permission": True})
    assert not cond.evaluate({})


def test_not_a_string() -> None:
    with pytest.raises(ConditionError):
        compile_condition(None)  # type: ignore[arg-type]


_TOKENS = st.sampled_from(
    ["a", "b.c", "Email_Permission", "1", "-2.5", "'x'", '"y"', "true", "null", "==", "!=", "<", ">=", "in",
     "contains", "and", "or", "not", "(", ")", "[", "]", ",", "exists(", "exists", ".", "=", "\\", "'", "1e", " "]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(_TOKENS, max_size=25).map(" ".join)))
def test_random_text_raises_only_condition_error(text: str) -> None:
    try:
        cond = compile_condition(text)
    except ConditionError as e:
        assert 0 <= e.position <= len(text)
        return
    assert isinstance(cond.evaluate({}), bool)


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.decimals(allow_nan=True)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c_d", "A", "0"]), inner)
    ),
    max_leaves=12,
)
_RECORDS = st.dictionaries(st.sampled_from(["a", "b", "c_d", "CD", "e", "0"]), _VALUES, max_size=6)
_EXPRESSIONS = [
    "a",
    "a == b",
    "a != b.a",
    "a < b or b >= c_d",
    "a in b and not (b contains a)",
    "a in [1, 'x', null, [true]]",
    "exists(b.c_d.a) or cd.0 > 1",
    "a.a.a.a == 0 or e <= 'z'",
    "not a and b > -1.5",
]


@settings(max_examples=300, deadline=None)
@given(_RECORDS, st.sampled_from(_EXPRESSIONS))
def test_random_records_never_raise(record: dict[str, Any], text: str) -> None:
    assert isinstance(compile_condition(text).evaluate(record), bool)
