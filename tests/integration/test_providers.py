"""Providers chosen by the payload, end to end on a live server (SQLite and PostgreSQL): connections
set by the admin (CLI and API, never by a client token, keys only named by variables under the
provider prefix); contacts with ProviderType 3 go to the Mailchimp fake, 7 to the Acoustic fake
(token refresh after expiry, a rate-limit answer retried), others are receipt warnings."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hookbay.actions.acoustic import forget_tokens
from tests.conftest import ADMIN_TOKEN, cli_migrate
from tests.fakes import acoustic, mailchimp
from tests.integration.test_deliveries import _deliveries, _settled

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MC_KEY = "0123456789abcdef0123456789abcdef-us6"
AC_KEY = "cid-1:secret-1:refresh-1"
ADA = {"SourceName": "Web", "SourceType": "Form", "Email": "ada@example.com", "FirstName": "Ada",
       "EmailPermission": True}


def post(live: Any, src: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    r = live.client.post(f"/V1/Data/{src['token']}?wait=1", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_provider_type_routes_contacts_through_the_clients_connections(
        db_url: str, live_server_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    mc_app = mailchimp.create_app(MC_KEY, {"list1"})
    mc_base, mc_stop = mailchimp.run_in_thread(mc_app)
    ac_app = acoustic.create_app("cid-1", "secret-1", "refresh-1", {"1001"})
    ac_base, ac_stop = mailchimp.run_in_thread(ac_app)
    forget_tokens()
    monkeypatch.setenv("HOOKBAY_PROVIDER_MC_ACME", MC_KEY)
    monkeypatch.setenv("HOOKBAY_PROVIDER_AC_ACME", AC_KEY)
    try:
        live = live_server_factory(db_url, mailchimp_base_url=mc_base, acoustic_base_url=ac_base.removesuffix("/3.0"),
                                   delivery_schedule="0.05,0.05,0.05")
        # the Mailchimp connection from the CLI, as an operator sets it up
        env = dict(os.environ)
        env.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": str(live.settings.database_url),
                    "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN, "HOOKBAY_LOG_LEVEL": "warning"})
        cli_migrate(env)

        def hb(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True,
                                  timeout=60)

        added = hb("providers", "add", "--client", "acme", "--type", "mailchimp", "--key-env", "HOOKBAY_PROVIDER_MC_ACME")
        assert added.returncode == 0 and "acme: mailchimp via HOOKBAY_PROVIDER_MC_ACME" in added.stdout, added.stderr
        refused = hb("providers", "add", "--client", "acme", "--type", "mailchimp", "--key-env", "HOOKBAY_ADMIN_TOKEN")
        assert refused.returncode != 0 and "HOOKBAY_PROVIDER_" in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr

        # the Acoustic connection over the API: admin only
        conn = {"client_id": "acme", "type": "acoustic", "key_env": "HOOKBAY_PROVIDER_AC_ACME", "pod": "us-1"}
        tok = live.client.post("/api/v1/tokens", json={"name": "acme", "client_id": "acme"}, headers=ADMIN).json()
        as_client = live.client.put("/api/v1/providers", json=conn, headers={"Authorization": f"Bearer {tok['token']}"})
        assert as_client.status_code == 403
        assert live.client.put("/api/v1/providers", json={**conn, "key_env": "HOOKBAY_SMTP_PASSWORD"},
                               headers=ADMIN).status_code == 422
        assert live.client.put("/api/v1/providers", json={**conn, "pod": "us-1.evil.io"}, headers=ADMIN).status_code == 422
        made = live.client.put("/api/v1/providers", json=conn, headers=ADMIN)
        assert made.status_code == 200 and made.json()["key_present"] is True, made.text
        listed = live.client.get("/api/v1/providers", params={"client_id": "acme"}, headers=ADMIN).json()
        assert [(c["type"], c["key_env"]) for c in listed] == [("acoustic", "HOOKBAY_PROVIDER_AC_ACME"),
                                                                ("mailchimp", "HOOKBAY_PROVIDER_MC_ACME")]
        assert AC_KEY not in str(listed) and MC_KEY not in str(listed)

        src = live.create_source(config={"parser": "contact", "allow_private_destinations": True})
        to_mc = post(live, src, {**ADA, "ProviderType": 3, "ListIds": ["list1"]})
        [d] = _deliveries(live, request_id=to_mc["request_id"], until=_settled())
        assert (d["action_name"], d["state"]) == ("provider:mailchimp", "succeeded"), d
        assert mc_app.state.members[("list1", mailchimp.md5_lower("ada@example.com"))]["status"] == "subscribed"

        to_ac = post(live, src, {**ADA, "ProviderType": "7", "ListIds": ["1001"]})
        [d] = _deliveries(live, request_id=to_ac["request_id"], until=_settled())
        assert (d["action_name"], d["state"]) == ("provider:acoustic", "succeeded"), d
        st = ac_app.state.acoustic
        rec = st.recipients[("1001", "ada@example.com")]
        assert rec["columns"]["First Name"] == "Ada" and not rec["opted_out"]

        # the token expired meanwhile, and the API is rate limiting: refreshed once, retried, delivered
        st.expire_tokens()
        st.fail_next = [429]
        opt_out = post(live, src, {**ADA, "EmailPermission": False, "ProviderType": 7, "ListIds": ["1001"]})
        [d] = _deliveries(live, request_id=opt_out["request_id"], until=_settled())
        assert d["state"] == "succeeded" and d["attempts"] == 2, d
        assert st.recipients[("1001", "ada@example.com")]["opted_out"] and st.token_requests == 2

        # an unknown number, a client without the connection, no ProviderType: stored, not pushed
        unknown = post(live, src, {**ADA, "ProviderType": 9, "ListIds": ["x"]})
        assert [w["code"] for w in unknown["receipt"]["warnings"]] == ["unknown_provider_type"]
        other = live.create_source(client_id="globex", config={"parser": "contact"})
        unconnected = post(live, other, {**ADA, "ProviderType": 7, "ListIds": ["1001"]})
        assert [w["code"] for w in unconnected["receipt"]["warnings"]] == ["no_provider_connection"]
        plain = copy.deepcopy(ADA)
        quiet = post(live, src, plain)
        assert quiet["receipt"]["warnings"] == []
        for rid in (unknown["request_id"], unconnected["request_id"], quiet["request_id"]):
            assert live.client.get("/api/v1/deliveries", params={"request_id": rid}, headers=ADMIN).json()["items"] == []

        removed = hb("providers", "remove", "--client", "acme", "--type", "mailchimp")
        assert removed.returncode == 0, removed.stderr
        listing = hb("providers", "list")
        assert "acoustic" in listing.stdout and "mailchimp" not in listing.stdout
    finally:
        mc_stop()
        ac_stop()
