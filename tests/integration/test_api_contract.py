"""The admin API against its own OpenAPI document (schemathesis): no 5xx, every response matching
its schema; and the ingest path fuzzed with hypothesis: no 5xx, the server keeps serving."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from hookbay.server.app import HookbayApp
from tests.conftest import ADMIN_TOKEN, _Server, free_port, make_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    port = free_port()
    app = HookbayApp(make_settings(f"sqlite:///{tmp / 'hookbay.db'}", tmp, port=port))
    srv = _Server(app, port)
    srv.start()
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        src = c.post("/api/v1/sources", json={"name": "contract", "client_id": "acme",
                                               "config": {"parser": "contact"}}).json()
        httpx.post(f"{url}/V1/Data/{src['token']}?wait=1",
                   json={"SourceName": "a", "SourceType": "b", "Email": "c@d.io"})
    yield url
    srv.stop()


# No 5xx; status codes, content types and bodies as documented. (positive_data_acceptance is left
# out on purpose: some fields are validated beyond what JSON Schema can say, e.g. CIDRs, and such
# requests are answered 422 by design.)
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


def test_admin_api_matches_its_schema(server: str) -> None:
    """Every operation of the OpenAPI document, driven by schemathesis' generated cases (its pytest
    plugin does not load under pytest 9, so the operations are iterated here)."""
    schema = schemathesis.openapi.from_url(f"{server}/api/v1/openapi.json")
    labels = []
    for result in schema.get_all_operations():
        op = result.ok()
        labels.append(op.label)

        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=CHECKS)

        check()
    assert len(labels) >= 14


def _ingest_url(server: str) -> str:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        src = c.post("/api/v1/sources", json={
            "name": "fuzz-" + secrets.token_hex(3), "client_id": "acme",
            "config": {"format": "json", "parser": "contact", "max_body_bytes": 4096,
                       "signature": {"scheme": "standard"}}}).json()
    return f"{server}/V1/Data/{src['token']}"


HEADER_NAMES = st.sampled_from([
    "content-type", "webhook-id", "webhook-timestamp", "webhook-signature", "x-api-key", "idempotency-key",
    "x-forwarded-for", "content-encoding", "x-custom",
])
HEADER_VALUES = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=6000), headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6),
       query=st.sampled_from(["", "?wait=1", "?api-key=x", "?wait=true&x=%ff"]))
def test_ingest_fuzz_never_5xx(server: str, body: bytes, headers: dict[str, str], query: str) -> None:
    url = _FUZZ_URL.setdefault(server, _ingest_url(server))
    r = httpx.post(url + query, content=body, headers=headers, timeout=10)
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code >= 400:
        err = r.json()["error"]
        assert err["code"] and err["message"]


_FUZZ_URL: dict[str, str] = {}


def test_server_still_serves_after_fuzz(server: str) -> None:
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
