"""The request log's typed rows and the views built from them: the receipt's JSON is written in the
documented key order, a detail shows a binary body as base64, and a row that could not be
decrypted travels to the parse pool and fails there with its own error."""

from __future__ import annotations

import pickle
from dataclasses import fields

import orjson
import pytest

from hookbay.errors import EncryptionKeyMissing
from hookbay.ops.requests import receipt, request_detail, request_summary
from hookbay.processing.worker import process_request
from hookbay.store import schema
from hookbay.store.requests import (
    SUMMARY_FIELDS,
    RequestRow,
    StoredRecord,
    StoredRequest,
    StoredRequestSummary,
)

T = 1_700_000_000_000_000


def _row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "req_1", "source_id": "src_1", "client_id": "acme", "received_at": T, "method": "POST",
        "path": "/V1/Data/t", "query": "", "headers": '[["Content-Type","application/json"]]', "peer": "10.0.0.1",
        "content_type": "application/json", "content_encoding": None, "body": b'{"a":1}', "body_size": 7,
        "verdict": "accepted", "rule": None, "status": 200, "state": "processed", "idempotency_key": None,
        "duplicate_of": None, "receipt": '{"errors":[],"warnings":[{"path":"$.a","code":"w","message":"m"}]}',
        "processed_at": T + 1_000, "key_id": None,
    }
    row.update(over)
    return row


def _record(idx: int = 0) -> StoredRecord:
    return StoredRecord(id=1, request_id="req_1", idx=idx, source_id="src_1", client_id="acme", parser="generic",
                        parser_version="1", data='{"fields":{"a":1},"types":{"a":"integer"}}', profile_id=None,
                        created_at=T)


def test_receipt_json_keeps_the_documented_key_order() -> None:
    got = orjson.dumps(receipt(StoredRequest.of(_row()), [_record()]))
    assert got == (
        b'{"request_id":"req_1","state":"processed","verdict":"accepted","received_at":"2023-11-14T22:13:20Z",'
        b'"processed_at":"2023-11-14T22:13:20.001000Z","duplicate_of":null,"records":[{"index":0,'
        b'"parser":"generic","parser_version":"1","fields":{"a":1},"types":{"a":"integer"}}],"errors":[],'
        b'"warnings":[{"path":"$.a","code":"w","message":"m"}]}')


def test_receipt_of_a_request_not_processed_yet() -> None:
    r = receipt(StoredRequest.of(_row(state="pending", receipt=None, processed_at=None)), [])
    assert (r.state, r.processed_at, r.records, r.errors, r.warnings) == ("pending", None, [], [], [])


def test_detail_shows_a_binary_body_as_base64_and_a_summary_needs_no_body() -> None:
    d = request_detail(StoredRequest.of(_row(body=memoryview(b"\xff\x00"), body_size=2)), [])
    assert (d.body, d.body_base64, d.headers) == (None, "/wA=", [["Content-Type", "application/json"]])
    head = StoredRequestSummary.of({k: v for k, v in _row().items() if k in SUMMARY_FIELDS})
    assert request_summary(head) == request_summary(StoredRequest.of(_row()))


def test_a_row_sealed_with_a_missing_key_fails_in_the_parse_pool_with_that_error() -> None:
    req = StoredRequest.of(_row(body=None, key_id="old"), open_error=EncryptionKeyMissing(detail={"key_id": "old"}))
    sent = pickle.loads(pickle.dumps(req))  # the parse pool is a spawned process
    with pytest.raises(EncryptionKeyMissing) as e:
        process_request(sent, None)
    assert e.value.detail == {"key_id": "old"}


def test_the_rows_cover_every_column() -> None:
    """A column added to the schema is added to its row type too (a search builds its rows by position)."""
    cols = [c.name for c in schema.requests.c]
    assert list(SUMMARY_FIELDS) == [c for c in cols if c not in ("headers", "body", "receipt")]
    assert {f.name for f in fields(StoredRequest)} - {"open_error"} == set(cols)
    assert [f.name for f in fields(StoredRecord)] == [c.name for c in schema.records.c]
    assert set(RequestRow.__annotations__) == set(cols)
