"""Consent at send time (hookbay.actions.base.current_consent), the rule alone: the profile's current ledger
decides whenever the record has a profile, even when that ledger is empty or says less than the
record; only a record without a profile falls back to its own flags (issue #19 row 9 and the
mutation run, which found the fallback's filters untested)."""

from __future__ import annotations

from hookbay.actions.base import current_consent

RECORD = {"consents": [{"channel": "email", "granted": True, "field": "EmailPermission"},
                       {"channel": "sms", "granted": 0}]}


def test_the_profile_ledger_wins_over_the_records_flags() -> None:
    profile = {"consent": {"email": False}}
    got = current_consent(RECORD, profile)
    assert got == {"email": False}
    got["email"] = True  # a copy: the caller cannot change the profile
    assert profile["consent"] == {"email": False}


def test_a_profile_without_consent_is_no_consent_not_the_records_flags() -> None:
    assert current_consent(RECORD, {"consent": None}) == {}
    assert current_consent(RECORD, {}) == {}


def test_without_a_profile_the_records_own_flags_as_booleans() -> None:
    got = current_consent(RECORD, None)
    assert got == {"email": True, "sms": False}
    assert all(type(v) is bool for v in got.values())


def test_the_fallback_skips_malformed_entries() -> None:
    record = {"consents": ["email", {"granted": True}, {"channel": "email", "granted": 1}, None]}
    assert current_consent(record, None) == {"email": True}
    assert current_consent({"consents": None}, None) == {}
    assert current_consent({}, None) == {}
