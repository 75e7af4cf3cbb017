"""A stored source as the layers above the store see it: attributes, config parsed, the API's view."""

from hookbay.ops.sources import source_out
from hookbay.store import StoredSource

ROW = {"id": "src_1", "client_id": "acme", "name": "Form", "token": "tok-1", "enabled": 1,
       "config": '{"parser":"contact","relay":true}', "api_key_hash": None,
       "created_at": 1_764_000_000_000_000, "updated_at": 1_764_000_000_000_000}


def test_a_row_becomes_typed_with_its_config_parsed() -> None:
    src = StoredSource.of(ROW)
    assert src.enabled is True  # SQLite hands back 1
    assert src.config == {"parser": "contact", "relay": True}
    assert StoredSource.of({**ROW, "config": ""}).config == {}


def test_the_api_view_of_a_stored_source() -> None:
    out = source_out(StoredSource.of(ROW), "http://h", secrets=2).model_dump(mode="json")
    assert out["ingest_url"] == "http://h/V1/Data/tok-1"
    assert (out["enabled"], out["api_key_required"], out["signing_secrets"]) == (True, False, 2)
    assert out["config"]["parser"] == "contact" and out["config"]["relay"] is True
    assert out["created_at"].startswith("2025-11-24")
