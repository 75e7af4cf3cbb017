"""The relay agent's pure parts: how it rebuilds the sender's request for the local application
(URL, headers, its own marker headers) and its back-off (issue #19: the agent's tests run it as a
subprocess, where the mutation run cannot see these)."""

from __future__ import annotations

import random

import pytest

from hookbay.relay.agent import HOP_BY_HOP, backoff, forward_headers, forward_url


@pytest.mark.parametrize(("base", "query", "want"), [
    ("http://127.0.0.1:8000/hook", "", "http://127.0.0.1:8000/hook"),
    ("http://127.0.0.1:8000/hook", "a=1&b=2", "http://127.0.0.1:8000/hook?a=1&b=2"),
    ("http://127.0.0.1:8000/hook?fixed=x", "a=1", "http://127.0.0.1:8000/hook?fixed=x&a=1"),
    ("https://app.local/in#frag", "a=1", "https://app.local/in?a=1#frag"),
])
def test_forward_url_keeps_the_local_query_and_appends_the_senders(base: str, query: str, want: str) -> None:
    assert forward_url(base, query) == want


def test_forward_headers_drop_hop_by_hop_and_add_the_agents_own() -> None:
    message = {"id": 42, "request_id": "req_1", "body_b64": "e30=", "headers": [
        ["Content-Type", "application/json"], ["Connection", "keep-alive, X-Secret-Hop"],
        ["x-secret-hop", "1"], ["Transfer-Encoding", "chunked"], ["X-Trace", "t1"], ["X-Caf\u00e9", "cr\u00e8me"]]}
    assert forward_headers(message) == [
        (b"Content-Type", b"application/json"), (b"X-Trace", b"t1"), ("X-Caf\u00e9".encode("latin-1"), "cr\u00e8me".encode("latin-1")),
        (b"X-Hookbay-Message-Id", b"42"), (b"X-Hookbay-Request-Id", b"req_1")]
    assert "transfer-encoding" in HOP_BY_HOP


def test_forward_headers_mark_a_missing_body_and_a_possible_duplicate() -> None:
    message = {"id": 7, "request_id": "req_2", "body_b64": None, "headers": None}
    assert forward_headers(message, possible_duplicate=True) == [
        (b"X-Hookbay-Message-Id", b"7"), (b"X-Hookbay-Request-Id", b"req_2"),
        (b"X-Hookbay-Body-Missing", b"1"), (b"X-Hookbay-Possible-Duplicate", b"1")]
    assert (b"X-Hookbay-Possible-Duplicate", b"1") not in forward_headers(message)


def test_backoff_doubles_caps_and_stays_in_the_upper_half(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        draws.append((a, b))
        return b

    monkeypatch.setattr(random, "uniform", uniform)
    assert [backoff(a, 0.5, 3.0) for a in (0, 1, 2, 3, 4)] == [0.5, 0.5, 1.0, 2.0, 3.0]
    assert draws == [(0, 0.25), (0, 0.25), (0, 0.5), (0, 1.0), (0, 1.5)]
    monkeypatch.undo()
    assert all(1.0 <= backoff(3, 0.5, 3.0) <= 2.0 for _ in range(100))


def test_forward_headers_read_the_connection_header_as_a_comma_list_with_or_without_spaces() -> None:
    message = {"id": 1, "request_id": "req_1", "body_b64": "", "headers": [
        ["Connection", "x-a,x-b"], ["X-A", "1"], ["X-B", "2"], ["X-C", "3"]]}
    assert forward_headers(message)[:1] == [(b"X-C", b"3")]
