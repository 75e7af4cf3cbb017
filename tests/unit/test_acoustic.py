"""The Acoustic client against the local fake over real HTTP: token refresh and re-use, a 401
refreshed once, rate limits and faults reported for the delivery layer, opt-in/opt-out, XML escaping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hookbay.actions.acoustic import (
    AcousticClient,
    AcousticError,
    Credentials,
    add_recipient_xml,
    base_url_for_pod,
    forget_tokens,
)
from tests.fakes import acoustic
from tests.fakes.mailchimp import run_in_thread

CREDS = Credentials("cid-1", "secret-1", "refresh-1")
ADA = {"email": "ada@example.com", "first_name": "Ada <&>", "address": {"city": "London"}}


@pytest.fixture
def fake() -> Iterator[tuple[str, Any]]:
    app = acoustic.create_app("cid-1", "secret-1", "refresh-1", {"1001", "1002"})
    base, stop = run_in_thread(app)
    forget_tokens()
    yield base.removesuffix("/3.0"), app.state.acoustic
    stop()


def push(base: str, list_id: str, contact: dict[str, Any], consent: bool | None, creds: Credentials = CREDS) -> str:
    async def go() -> str:
        async with httpx.AsyncClient() as http:
            return await AcousticClient(http, creds, base).push(list_id, contact, consent)

    return asyncio.run(go())


def test_opt_in_upserts_once_per_email_and_reuses_the_token(fake: tuple[str, Any]) -> None:
    base, st = fake
    assert push(base, "1001", ADA, True).startswith("1001: opted in ")
    assert push(base, "1001", {**ADA, "first_name": "Augusta"}, True).startswith("1001: opted in ")
    assert len(st.recipients) == 1 and st.token_requests == 1
    rec = st.recipients[("1001", "ada@example.com")]
    assert rec["columns"] == {"EMAIL": "ada@example.com", "First Name": "Augusta", "City": "London"}
    assert rec["created_from"] == "2" and not rec["opted_out"]


def test_opt_out_is_recorded_and_unknown_consent_adds_nothing(fake: tuple[str, Any]) -> None:
    base, st = fake
    assert "opted out" in push(base, "1002", ADA, False)
    assert st.recipients[("1002", "ada@example.com")]["opted_out"]
    assert "not added" in push(base, "1001", ADA, None)
    assert ("1001", "ada@example.com") not in st.recipients


def test_an_expired_token_is_refreshed_once_and_the_call_repeated(fake: tuple[str, Any]) -> None:
    base, st = fake
    push(base, "1001", ADA, True)
    st.expire_tokens()
    push(base, "1001", ADA, True)
    assert st.token_requests == 2 and len([c for c in st.calls if c[0] == "AddRecipient"]) == 2


def test_wrong_credentials_rate_limits_and_faults_explain_themselves(fake: tuple[str, Any]) -> None:
    base, st = fake
    with pytest.raises(AcousticError) as e:
        push(base, "1001", ADA, True, Credentials("cid-1", "wrong", "refresh-1"))
    assert e.value.status_code == 401 and e.value.permanent and "wrong" not in str(e.value)
    st.fail_next = [429]
    st.retry_after = "7"
    with pytest.raises(AcousticError) as e:
        push(base, "1001", ADA, True)
    assert e.value.status_code == 429 and e.value.retry_after == "7" and not e.value.permanent
    with pytest.raises(AcousticError) as e:
        push(base, "9999", ADA, True)
    assert e.value.permanent and "List 9999 not found" in str(e.value)
    assert push(base, "1001", ADA, True).startswith("1001: opted in"), "after a 429 the next call goes through"


def test_xml_is_built_with_escaping_and_hosts_are_acoustic_only() -> None:
    xml = add_recipient_xml("1", "a@b.co", {"First Name": "</VALUE><x>"})
    assert b"&lt;/VALUE&gt;&lt;x&gt;" in xml and b"<UPDATE_IF_FOUND>true</UPDATE_IF_FOUND>" in xml
    assert base_url_for_pod("us-1") == "https://api-campaign-us-1.goacoustic.com"
    with pytest.raises(ValueError):
        base_url_for_pod("us-1.evil.io/")
    with pytest.raises(ValueError):
        Credentials.parse("only:two")
    assert "s3cr3t" not in repr(Credentials.parse("a:s3cr3t:r3fr3sh"))
