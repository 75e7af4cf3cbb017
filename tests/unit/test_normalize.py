"""The contact parser's fast paths must give exactly what phonenumbers / email_validator give."""

from __future__ import annotations

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hookbay.parsers import normalize
from hookbay.parsers.normalize import (
    _parse_international,
    is_valid,
    normalize_email,
    normalize_phone,
    parse_phone,
)


def _fields(n: phonenumbers.PhoneNumber) -> tuple[object, ...]:
    return (n.country_code, n.national_number, n.extension, n.italian_leading_zero, n.number_of_leading_zeros,
            n.raw_input, n.country_code_source, n.preferred_domestic_carrier_code)


def _library_parse(raw: str, region: str | None) -> phonenumbers.PhoneNumber | str:
    try:
        return phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as e:
        return f"error: {e}"


def _ours(raw: str, region: str | None) -> phonenumbers.PhoneNumber | str:
    try:
        return parse_phone(raw, region)
    except phonenumbers.NumberParseException as e:
        return f"error: {e}"


def _library_normalize(raw: str, region: str | None) -> tuple[str, bool] | None | str:
    try:
        n = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as e:
        return f"error: {e}"
    if not phonenumbers.is_possible_number(n):
        return None
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164), phonenumbers.is_valid_number(n)


def _our_normalize(raw: str, region: str | None) -> tuple[str, bool] | None | str:
    try:
        return normalize_phone(raw, region)
    except phonenumbers.NumberParseException as e:
        return f"error: {e}"


def _same(raw: str, region: str | None = None) -> None:
    assert _our_normalize(raw, region) == _library_normalize(raw, region), raw
    want, got = _library_parse(raw, region), _ours(raw, region)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want, raw
        return
    assert _fields(got) == _fields(want), raw
    assert normalize.e164(got) == phonenumbers.format_number(want, phonenumbers.PhoneNumberFormat.E164)
    assert is_valid(got) == phonenumbers.is_valid_number(want), raw
    assert phonenumbers.is_possible_number(got) == phonenumbers.is_possible_number(want), raw


def test_fast_paths_are_available() -> None:
    """If an upgrade of either library removes what the fast paths use, they silently turn off;
    this says so instead."""
    assert normalize._FAST_PHONE and normalize._FAST_EMAIL


def test_bench_numbers_take_the_fast_path() -> None:
    for raw in ("+44 20 7946 0958", "+44 7700 900123", "+1 (650) 253-0000", "+49 30 1234567", "+39 06 6982"):
        assert _parse_international(raw) is not None
        _same(raw)


@pytest.mark.parametrize("region", sorted(phonenumbers.SUPPORTED_REGIONS))
def test_every_example_number_of_every_region(region: str) -> None:
    for kind in range(12):  # every PhoneNumberType that has example numbers
        ex = phonenumbers.example_number_for_type(region, kind)
        if ex is None:
            continue
        nsn = phonenumbers.national_significant_number(ex)
        cc = ex.country_code
        for raw in (f"+{cc}{nsn}", f"+{cc} {nsn}", f"+{cc} 0{nsn}", f"+{cc} ({nsn[:2]}) {nsn[2:]}",
                    f"+{cc}{nsn[:-1]}", f"+{cc}{nsn}1", f"+{cc}{nsn}12", f"+{cc}-{nsn[:3]}.{nsn[3:]}",
                    f"+{cc}00{nsn}", f"+{cc}9{nsn}", f"+{cc}1{nsn}", f"+{cc}{nsn[:3]}"):
            _same(raw)


def test_non_geographic_numbers() -> None:
    for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        ex = phonenumbers.example_number_for_non_geo_entity(cc)
        if ex is None:
            continue
        nsn = phonenumbers.national_significant_number(ex)
        for raw in (f"+{cc}{nsn}", f"+{cc} {nsn[:-1]}", f"+{cc} {nsn}5"):
            _same(raw)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="+0123456789 ().-", min_size=1, max_size=24), st.sampled_from([None, "GB", "US", "IT", "DE"]))
@example("+390612345678", None)
@example("+44 (0) 20 7946 0958", None)
@example("+0044 20 7946 0958", None)
@example("++44 20 7946 0958", None)
@example("+1 2", None)
@example("+123", None)
@example("+54 9 11 1234 5678", None)
@example("+52 1 55 1234 5678", None)
def test_any_plain_input_matches_the_library(raw: str, region: str | None) -> None:
    _same(raw, region)


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=1, max_value=999), st.text(alphabet="0123456789", min_size=0, max_size=17))
def test_any_country_code_and_digits(cc: int, digits: str) -> None:
    _same(f"+{cc}{digits}")
    _same(f"+{cc} {digits}")


@settings(max_examples=1000, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_any_text_matches_the_library(raw: str) -> None:
    _same("+" + raw)
    _same(raw, "GB")


# --- email ---------------------------------------------------------------------------------------


def _library_email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as e:
        return f"error: {e}"


def _our_email(value: str) -> str:
    try:
        return normalize_email(value)
    except EmailNotValidError as e:
        return f"error: {e}"


_local_chars = "abcXYZ09._-+!#$%&'*/=?^`{|}~\"\\ (),:;<>@[]é"
_domain_chars = "abcXYZ09.-_ é"
_labels = st.text(alphabet="abcxnXN09-", min_size=0, max_size=8)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_local_chars, min_size=0, max_size=12), st.text(alphabet=_domain_chars, min_size=0, max_size=16))
@example("Ada.Lovelace", "Example.COM")
@example("postmaster", "example.com")
@example("Abuse", "example.com")
@example("a", "example.test")
@example("a", "sub.localhost")
@example("a", "ab--cd.com")
@example("a", "xn--bcher-kva.example")
@example("a", "example.c0m")
@example("a", "example.com1")
@example("a" * 64, "example.com")
@example("a" * 65, "example.com")
@example("a", "b" * 63 + ".com")
@example("a", "b" * 64 + ".com")
@example("a", ("b" * 60 + ".") * 4 + "com")
@example("a" * 64, ("b" * 60 + ".") * 3 + "co")
def test_emails_match_the_library(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert _our_email(value) == _library_email(value)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_labels, min_size=1, max_size=5), st.text(alphabet="aZ9.-_+", min_size=1, max_size=8))
def test_host_names_match_the_library(labels: list[str], local: str) -> None:
    value = f"{local}@{'.'.join(labels)}"
    assert _our_email(value) == _library_email(value)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40))
def test_any_text_email_matches_the_library(value: str) -> None:
    assert _our_email(value) == _library_email(value)
