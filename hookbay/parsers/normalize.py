"""Fast, exact equivalents of the phonenumbers / email_validator calls the contact parser makes.

Profiling the worker showed most of a contact's parse time in ``phonenumbers.parse`` (generic
text handling: extensions, RFC 3966, alpha numbers, Unicode digits), ``is_valid_number`` (it tries
each number type of each region sharing a calling code, twice over, recompiling patterns through a
cache lookup every time) and ``validate_email`` (Unicode/IDNA machinery). Real feeds overwhelmingly
send plain ASCII: ``+44 20 7946 0958``, ``jane.doe@example.com``. For those, this module computes
the same answer directly; anything outside the narrow shape it recognises goes to the library
unchanged, and every error message still comes from the library. Nothing here is cached per value,
so distinct customers are as fast as repeated ones.

The equivalence is tested against the libraries themselves in tests/unit/test_normalize.py (property
tests over the fast paths' input shapes, and every example number of every region and type).
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from email_validator import validate_email
from phonenumbers import PhoneNumber, PhoneNumberFormat

# --- phone numbers -------------------------------------------------------------------------------

try:  # private helpers of phonenumbers; without them the library's own functions are used
    from phonenumbers.phonemetadata import REGION_CODE_FOR_NON_GEO_ENTITY, PhoneMetadata
    from phonenumbers.phonenumberutil import (
        COUNTRY_CODE_TO_REGION_CODE,
        ValidationResult,
        _maybe_strip_national_prefix_carrier_code,
        _test_number_length,
    )

    _KEEP_UNSTRIPPED = (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
                        ValidationResult.INVALID_LENGTH)
    _POSSIBLE = (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY)  # is_possible_number
    _FAST_PHONE = True
except Exception:  # pragma: no cover - depends on the installed phonenumbers
    _FAST_PHONE = False

# "+", then ASCII digits and the separators people type; nothing that could start an extension
# (x, ext, #, ;, ,), a second number (/) or an RFC 3966 URI, no letters, no Unicode digits.
_SIMPLE_INTERNATIONAL = re.compile(r"\+[0-9][0-9 ().\-]*[0-9]")
_SEPARATORS = str.maketrans("", "", " ().-")
_MAX_INPUT = 250  # phonenumbers' _MAX_INPUT_STRING_LENGTH
_MIN_NSN, _MAX_NSN = 2, 17  # _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN
# Number types _number_type_helper tries after the general description (mobile last: it is skipped
# when the region's mobile and fixed-line patterns are the same).
_TYPE_DESCS = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
               "voicemail", "fixed_line", "mobile")


def parse_phone(raw: str, region: str | None) -> PhoneNumber:
    """``phonenumbers.parse(raw, region)``; raises ``NumberParseException`` the same way."""
    if _FAST_PHONE and raw[:1] == "+":
        number = _parse_international(raw)
        if number is not None:
            return number
    return phonenumbers.parse(raw, region)


def normalize_phone(raw: str, region: str | None) -> tuple[str, bool] | None:
    """What the contact parser needs from ``phonenumbers.parse(raw, region)``: None when the number
    is not ``is_possible_number``, else its E.164 form and ``is_valid_number``. Raises
    ``NumberParseException`` the same way ``parse`` does."""
    if _FAST_PHONE and raw[:1] == "+":
        found = _split_international(raw)
        if found is not None:
            cc, nsn, length = found
            if length not in _POSSIBLE:
                return None
            return f"+{cc}{nsn}", _is_valid_nsn(cc, nsn)
    number = phonenumbers.parse(raw, region)
    if not phonenumbers.is_possible_number(number):
        return None
    return e164(number), is_valid(number)


def _split_international(raw: str) -> tuple[int, str, Any] | None:
    """For a plain ``+<digits and separators>`` string (the region is ignored for those): the
    country code and national significant number ``phonenumbers.parse`` finds, and
    ``_test_number_length`` of that number (what ``is_possible_number`` checks); or None to let the
    library decide (including every error)."""
    if len(raw) > _MAX_INPUT or not _SIMPLE_INTERNATIONAL.fullmatch(raw):
        return None
    digits = raw[1:].translate(_SEPARATORS)
    if len(digits) <= _MIN_NSN or digits[0] == "0":
        return None
    for i in (1, 2, 3):
        cc = int(digits[:i])
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[i:]
    if len(national) < _MIN_NSN:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, COUNTRY_CODE_TO_REGION_CODE[cc][0])
    if metadata is None:
        return None
    _, stripped, _ = _maybe_strip_national_prefix_carrier_code(national, metadata)
    length = None
    if stripped != national:
        length = _test_number_length(stripped, metadata)
        if length not in _KEEP_UNSTRIPPED:
            national = stripped
        else:
            length = None
    if not _MIN_NSN <= len(national) <= _MAX_NSN:
        return None
    if length is None:
        length = _test_number_length(national, metadata)
    return cc, national, length


def _parse_international(raw: str) -> PhoneNumber | None:
    """What ``phonenumbers.parse`` returns for a plain ``+<digits and separators>`` string, or None
    to let the library decide."""
    found = _split_international(raw)
    if found is None:
        return None
    cc, national, _ = found
    number = PhoneNumber(country_code=cc, national_number=int(national))
    if len(national) > 1 and national[0] == "0":  # _set_italian_leading_zeros_for_phone_number
        number.italian_leading_zero = True
        zeros = 1
        while zeros < len(national) - 1 and national[zeros] == "0":
            zeros += 1
        if zeros != 1:
            number.number_of_leading_zeros = zeros
    return number


def e164(number: PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


# Per (metadata, length of the national number): the compiled general pattern (None when the
# length is impossible) and the type patterns that apply to that length. Bounded by the metadata:
# at most a few thousand entries.
_DescPatterns = tuple[re.Pattern[str] | None, tuple[re.Pattern[str], ...]]
_desc_patterns: dict[tuple[str, int, int], _DescPatterns] = {}
_leading_digits: dict[str, re.Pattern[str]] = {}


def _desc_pattern(desc: Any, length: int) -> re.Pattern[str] | None:
    """The pattern ``_is_number_matching_desc`` would match a number of this length against, or None
    when it returns False for any number of this length."""
    if desc is None:
        return None
    if len(desc.possible_length) > 0 and length not in desc.possible_length:
        return None
    if not desc.national_number_pattern:
        return None
    return re.compile(desc.national_number_pattern)


def _patterns(metadata: Any, length: int) -> _DescPatterns:
    key = (metadata.id, metadata.country_code, length)
    found = _desc_patterns.get(key)
    if found is None:
        names = _TYPE_DESCS[:-1] if metadata.same_mobile_and_fixed_line_pattern else _TYPE_DESCS
        types = tuple(p for p in (_desc_pattern(getattr(metadata, n), length) for n in names) if p is not None)
        found = _desc_patterns[key] = (_desc_pattern(metadata.general_desc, length), types)
    return found


def _has_type(nsn: str, metadata: Any) -> bool:
    """``_number_type_helper(nsn, metadata) != PhoneNumberType.UNKNOWN``."""
    general, types = _patterns(metadata, len(nsn))
    if general is None or general.fullmatch(nsn) is None:
        return False
    for p in types:
        if p.fullmatch(nsn) is not None:
            return True
    return False


def is_valid(number: PhoneNumber) -> bool:
    """``phonenumbers.is_valid_number``."""
    if not _FAST_PHONE:  # pragma: no cover
        return bool(phonenumbers.is_valid_number(number))
    if number.country_code is None:
        return False
    return _is_valid_nsn(number.country_code, phonenumbers.national_significant_number(number))


def _is_valid_nsn(cc: int, nsn: str) -> bool:
    """``is_valid_number`` of the number with this country code and national significant number:
    the same region choice (``region_code_for_number``), then the same type check."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if regions is None:
        return False
    typed = None  # the metadata already found to have a type for nsn
    if len(regions) == 1:
        region = regions[0]
    else:  # _region_code_for_number_from_list
        for region in regions:
            metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
            if metadata is None:
                continue
            if metadata.leading_digits is not None:
                pattern = _leading_digits.get(metadata.leading_digits)
                if pattern is None:
                    pattern = _leading_digits[metadata.leading_digits] = re.compile(metadata.leading_digits)
                if pattern.match(nsn):
                    break
            elif _has_type(nsn, metadata):
                typed = metadata
                break
        else:
            return False
    # is_valid_number_for_region
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, region.upper())
    if metadata is None:
        return False
    if region != REGION_CODE_FOR_NON_GEO_ENTITY and cc != phonenumbers.country_code_for_valid_region(region):
        return False
    return metadata is typed or _has_type(nsn, metadata)


# --- email addresses -----------------------------------------------------------------------------

try:
    from email_validator import SPECIAL_USE_DOMAIN_NAMES
    from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

    _SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)
    _MAILBOX_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
    _FAST_EMAIL = True
except Exception:  # pragma: no cover - depends on the installed email_validator
    _FAST_EMAIL = False

_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
# An ASCII dot-atom local part and a host name of at least two labels whose last ends in a letter.
_SIMPLE_EMAIL = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@({_LABEL}(?:\.{_LABEL})+)")


def normalize_email(value: str) -> str:
    """``validate_email(value, check_deliverability=False).normalized``; raises
    ``EmailNotValidError`` the same way (by calling it for anything not plainly valid)."""
    if _FAST_EMAIL:
        m = _SIMPLE_EMAIL.fullmatch(value)
        if m is not None:
            local, domain = m.groups()
            domain = domain.lower()  # idna.uts46_remap of an ASCII host name
            if (len(value) <= 254 and len(domain) <= 253 and domain[-1].isalpha() and "--" not in domain
                    and local.lower() not in _MAILBOX_NAMES
                    and all(len(label) <= 63 for label in domain.split("."))
                    and not any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE)):
                return f"{local}@{domain}"
    return validate_email(value, check_deliverability=False).normalized
