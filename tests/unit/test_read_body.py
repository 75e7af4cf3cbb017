"""The ingest body reader over ASGI messages: the size limit is checked as chunks arrive, a
disconnect is noticed, and the body is exactly the bytes sent (issue #19, row 3 and the mutation run)."""

from __future__ import annotations

from typing import Any

import pytest

from hookbay.errors import PayloadTooLarge
from hookbay.ingest.endpoint import ClientGone, _header_map, read_body


def _receive(*messages: dict[str, Any]):  # type: ignore[no-untyped-def]
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        assert queue, "read past the last message"
        return queue.pop(0)

    return receive


async def test_one_chunk_is_returned_as_is() -> None:
    chunk = b'{"a":1}'
    got = await read_body(_receive({"type": "http.request", "body": chunk}), 100)
    assert got is chunk  # no copy on the common path


async def test_chunks_are_joined_in_order() -> None:
    got = await read_body(_receive({"type": "http.request", "body": b"ab", "more_body": True},
                                   {"type": "http.request", "body": b"", "more_body": True},
                                   {"type": "http.request", "more_body": True},
                                   {"type": "http.request", "body": b"cd", "more_body": False}), 100)
    assert got == b"abcd"


async def test_no_body_key_is_an_empty_body_and_no_more_body_key_is_the_end() -> None:
    assert await read_body(_receive({"type": "http.request"}), 100) == b""


async def test_exactly_the_limit_is_accepted_one_more_byte_is_not() -> None:
    assert await read_body(_receive({"type": "http.request", "body": b"x" * 10}), 10) == b"x" * 10
    with pytest.raises(PayloadTooLarge) as e:
        await read_body(_receive({"type": "http.request", "body": b"x" * 6, "more_body": True},
                                 {"type": "http.request", "body": b"x" * 5}), 10)
    assert e.value.detail == {"limit_bytes": 10}


async def test_a_disconnect_is_client_gone() -> None:
    with pytest.raises(ClientGone):
        await read_body(_receive({"type": "http.request", "body": b"ab", "more_body": True},
                                 {"type": "http.disconnect"}), 100)


def test_header_map_lower_cases_names_and_the_first_of_a_repeated_header_wins() -> None:
    assert _header_map([(b"X-Sig", b"1"), (b"x-sig", b"2"), (b"Content-Type", b"a/b")]) == {
        b"x-sig": b"1", b"content-type": b"a/b"}
