"""The worker's result as a typed value: it survives the parse pool's pickling, its receipt is
stored as the same JSON as before, and provider routing adds typed deliveries and warnings."""

from __future__ import annotations

import pickle

import orjson

from hookbay import providers
from hookbay.results import ParsedBody, ParseReceipt, PlannedDelivery, ProcessResult

T = 1_700_000_000_000_000


def _result(*contacts: dict[str, object]) -> ProcessResult:
    parsed = ParsedBody("contact", "1", "processed", [{"contact": c, "consents": []} for c in contacts],
                        ParseReceipt([], [{"path": "$.a", "code": "unknown_key", "message": "m", "document": 0}]))
    return parsed.for_request("req_1", "src_1", "acme", T)


def test_a_result_travels_through_pickle_whole() -> None:
    res = _result({"email": "a@b.co"})
    res.deliveries.append(PlannedDelivery(0, 1, "forward", "crm", "http:h:80", once_key="order:1|crm"))
    assert pickle.loads(pickle.dumps(res)) == res


def test_the_stored_receipt_keeps_its_json() -> None:
    receipt = ParseReceipt([{"path": "$", "code": "c", "message": "m"}], [])
    assert orjson.dumps(receipt.as_dict()) == b'{"errors":[{"path":"$","code":"c","message":"m"}],"warnings":[]}'
    assert orjson.dumps(ParseReceipt().as_dict()) == b'{"errors":[],"warnings":[]}'


def test_routing_adds_pushes_and_warnings_to_the_result() -> None:
    res = _result({"email": "a@b.co", "provider_type": 3, "list_ids": ["x"]}, {"email": "c@b.co"},
                  {"email": "d@b.co", "provider_type": 7}, {"email": "e@b.co", "provider_type": 9})
    providers.route(res, {"mailchimp"})
    assert res.deliveries == [PlannedDelivery(0, -3, "mailchimp", "provider:mailchimp", "mailchimp:acme")]
    assert [(w["code"], w.get("record")) for w in res.receipt.warnings] == [
        ("unknown_key", None), ("no_provider_connection", 2), ("unknown_provider_type", 3)]
