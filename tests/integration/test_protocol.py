"""The coalescing HTTP protocol answers byte for byte as uvicorn's own httptools protocol does.

Two real uvicorn servers on loopback run the same ASGI app: one with ``hookbay serve``'s
configuration, one with plain ``http="httptools"``. Raw sockets send the same bytes to both and
the answers must match (the ``date`` header aside): the hot path's one-write ``respond``, the
generic start/body path, streaming, HEAD, pipelining, ``Connection: close`` and
``Expect: 100-continue``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hookbay.ingest.asgi import send_raw
from hookbay.ingest.protocol import _CoalescingTransport, uvicorn_config


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send_raw(send, 200 if body else 404, b'{"got":%d}' % len(body), extra=[(b"x-request-id", b"req_1")])


class _Server:
    def __init__(self, http: Any) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn_config(app, "127.0.0.1", self.port)
        if http is not None:
            config.http = http
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int]]:
    ours, theirs = _Server(None), _Server("httptools")
    try:
        yield ours.port, theirs.port
    finally:
        ours.stop()
        theirs.stop()


def _exchange(port: int, *chunks: bytes, wait_for: bytes | None = None) -> bytes:
    """Send ``chunks`` (after the first, only once ``wait_for`` has arrived), read until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        got = b""
        s.sendall(chunks[0])
        if wait_for is not None:
            while wait_for not in got:
                data = s.recv(65536)
                assert data, f"closed before {wait_for!r}: {got!r}"
                got += data
        for c in chunks[1:]:
            s.sendall(c)
        while data := s.recv(65536):
            got += data
    return re.sub(rb"date: [^\r]*\r\n", b"date: X\r\n", got)


POST = b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"

CASES = {
    "respond, connection close": [POST + b"Connection: close\r\n\r\n{\"a\":1}"],
    "respond then generic, pipelined": [
        POST + b"\r\n{\"a\":1}" + b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    "HEAD takes uvicorn's path": [b"HEAD /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    "HTTP/1.0 closes": [b"POST /fast HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"],
    "malformed request": [b"NOT HTTP AT ALL\r\n\r\n"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_bytes_as_uvicorn(servers: tuple[int, int], case: str) -> None:
    ours, theirs = servers
    mine = _exchange(ours, *CASES[case])
    assert mine == _exchange(theirs, *CASES[case])
    assert mine.startswith(b"HTTP/1.1 ")


def test_responses_are_what_the_app_sent(servers: tuple[int, int]) -> None:
    out = _exchange(servers[0], *CASES["respond then generic, pipelined"])
    assert out.count(b"HTTP/1.1 ") == 3
    assert b'content-length: 9\r\nx-request-id: req_1\r\n\r\n{"got":7}' in out
    assert b"transfer-encoding: chunked\r\n\r\n4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n" in out
    assert out.endswith(b"HTTP/1.1 204 No Content\r\ndate: X\r\nconnection: close\r\n\r\n")


def test_expect_100_continue_is_not_held_back(servers: tuple[int, int]) -> None:
    head = POST + b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    out = _exchange(servers[0], head, b'{"a":1}', wait_for=b"100 Continue\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert out.endswith(b'{"got":7}')


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def test_head_and_body_leave_in_one_write() -> None:
    rec = _Recorder()
    t = _CoalescingTransport(rec)  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert rec.writes == []
    t.write(b"{}")
    t.write(b"more")
    assert rec.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"more"]


def test_interim_response_passes_and_held_head_is_flushed_on_close() -> None:
    rec = _Recorder()
    t = _CoalescingTransport(rec)  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    t.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert rec.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    t.close()
    assert rec.writes[-1] == b"HTTP/1.1 204 No Content\r\n\r\n" and rec.closed
