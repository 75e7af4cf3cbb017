"""The connection edge (issue #11, findings 4-6), attacked over real loopback sockets.

Slow clients (idle, partial request line, partial headers, short body, a head dripped after a
response) are closed at their deadline, one address cannot hold more than its share of
connections, a full server keeps room for the admin API, heads are bounded (431 before the
token lookup), and neither an unknown token nor an unauthenticated admin call makes the server
read a body. Linux routes all of 127.0.0.0/8 to loopback, so 127.0.0.2 plays another client.
These are connection behaviours, so they run on SQLite only.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer

ATTACKER = "127.0.0.2"


@pytest.fixture(autouse=True)
def _enough_fds() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture
def server(live_server_factory: Any, tmp_path: Path) -> Iterator[Any]:
    def make(**over: object) -> LiveServer:
        return live_server_factory(f"sqlite:///{tmp_path / 'edge.db'}", **over)  # type: ignore[no-any-return]

    yield make


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def port_of(live: LiveServer) -> int:
    return int(live.url.rsplit(":", 1)[1])


def read_response(s: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One response from a raw socket (content-length framed)."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body[:n]


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True once the server has closed ``s`` (EOF or reset), reading and dropping any answer."""
    s.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def still_open(s: socket.socket) -> bool:
    """Open and not answered: nothing to read yet."""
    s.setblocking(False)
    try:
        s.recv(65536, socket.MSG_PEEK)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def error_code(body: bytes) -> str:
    return str(orjson.loads(body)["error"]["code"])


def webhook(live: LiveServer, token: str) -> tuple[int, float]:
    t0 = time.monotonic()
    with httpx.Client(timeout=10) as c:
        r = c.post(f"{live.url}/v1/data/{token}", json={"email": "a@example.com"})
    return r.status_code, time.monotonic() - t0


SLOW_KINDS = (
    b"",  # connects and says nothing
    b"POST /v1/da",  # partial request line
    b"POST /v1/data/TOKEN HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # partial headers
    b"POST /v1/data/TOKEN HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":",
)


def test_slow_connections_are_capped_per_client_and_closed_at_their_deadline(server: Any) -> None:
    live = server(max_connections_per_client=200, header_timeout=2, body_idle_timeout=2)
    token = live.create_source()["token"]
    port = port_of(live)
    held: list[tuple[socket.socket, bytes]] = []
    try:
        for i in range(300):
            s = connect(port, ATTACKER)
            kind = SLOW_KINDS[i % len(SLOW_KINDS)].replace(b"TOKEN", token.encode())
            if kind:
                s.sendall(kind)
            held.append((s, kind))
        opened = time.monotonic()

        status, took = webhook(live, token)
        assert status == 200
        assert took < 1.0, f"a webhook took {took:.2f}s while slow connections were held"
        refused, kept = held[200:], held[:200]
        assert all(still_open(s) for s, _ in kept[-20:]), "held connections closed before their deadline"

        for s, _ in refused:
            code, headers, body = read_response(s)
            assert code == 503 and error_code(body) == "too_many_connections"
            assert headers["connection"] == "close"

        for s, kind in kept:
            if kind:  # a partial head or body is answered 408 before the close
                code, _, body = read_response(s, timeout=10)
                assert code == 408 and error_code(body) == "request_timeout"
            assert closed_within(s, 10), f"a slow connection ({kind[:20]!r}) was never closed"
        waited = time.monotonic() - opened
        assert waited > 1.5, f"slow connections closed after {waited:.2f}s, before the 2 s deadline"
    finally:
        for s, _ in held:
            s.close()
    status, _ = webhook(live, token)
    assert status == 200


def test_a_head_dripped_after_a_response_is_closed_at_the_header_deadline(server: Any) -> None:
    """uvicorn's keep-alive timer stops at the first byte; the head deadline does not."""
    live = server(header_timeout=1.5)
    s = connect(port_of(live))
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        code, _, _ = read_response(s)
        assert code == 200
        start = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 200:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if not still_open(s):
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - start > 10:
                break
        took = time.monotonic() - start
        assert closed, "a dripping head kept the connection open"
        assert 1.0 < took < 8, took
    finally:
        s.close()


def test_idle_keep_alive_and_fresh_silent_connections_are_closed(server: Any) -> None:
    live = server(header_timeout=2)
    port = port_of(live)
    kept, fresh = connect(port), connect(port)
    try:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(kept)[0] == 200
        start = time.monotonic()
        assert closed_within(fresh, 10), "a connection that never sent a byte stayed open"
        assert closed_within(kept, 10), "an idle keep-alive connection stayed open"
        took = time.monotonic() - start
        assert 1.5 < took < 10, took  # uvicorn's keep-alive timeout (5 s) after the response
    finally:
        kept.close()
        fresh.close()


def test_full_server_keeps_room_for_the_admin_api_and_sheds_stalled_connections(server: Any) -> None:
    live = server(max_connections=40, admin_reserved_connections=10, max_connections_per_client=1000,
                  header_timeout=5, body_idle_timeout=3)
    token = live.create_source()["token"]
    port = port_of(live)
    socks: list[socket.socket] = []
    try:
        # stalled heads: each new one sheds the oldest, so they never hold more than the ingest share
        stalled = [connect(port, ATTACKER) for _ in range(60)]
        socks += stalled
        for s in stalled:
            s.sendall(b"POST /v1/da")
        shed = sum(closed_within(s, 0.5) for s in stalled[:30])
        assert shed == 30, f"only {shed} of the oldest stalled connections were shed"
        status, _ = webhook(live, token)
        assert status == 200

        # busy ingest connections (slow bodies) cannot be shed: the reserve serves admin only
        head = (f"POST /v1/data/{token} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n{").encode()
        for s in stalled[30:]:
            s.close()
        busy = []
        for _ in range(30):
            s = connect(port, ATTACKER)
            s.sendall(head)
            busy.append(s)
        socks += busy
        time.sleep(0.3)
        extra = connect(port, ATTACKER)
        socks.append(extra)
        extra.sendall(head)
        code, _, body = read_response(extra)
        assert code == 503 and error_code(body) == "too_many_connections"

        with httpx.Client(base_url=live.url, timeout=5) as c:
            assert c.get("/healthz").status_code == 200
            r = c.get("/api/v1/sources", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 200 and len(r.json()) == 1
            r = c.post(f"/v1/data/{token}", json={"a": 1})
            assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_connections"

        for s in busy:  # the slow bodies time out, and ingest is back
            code, _, body = read_response(s, timeout=10)
            assert code == 408
        status, _ = webhook(live, token)
        assert status == 200
    finally:
        for s in socks:
            s.close()


def test_a_one_megabyte_header_gets_431_and_nothing_is_stored(server: Any) -> None:
    live = server()
    token = live.create_source()["token"]
    s = connect(port_of(live))
    try:
        s.sendall(f"POST /v1/data/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Big: ".encode()
                  + b"a" * (1 << 20) + b"\r\n\r\n{}")
        code, headers, body = read_response(s)
        assert code == 431 and error_code(body) == "headers_too_large"
        assert headers["connection"] == "close"
        assert closed_within(s, 5)
    finally:
        s.close()
    with live.admin() as c:
        assert c.get("/api/v1/requests").json()["items"] == []


def test_header_count_is_capped_at_100_before_the_token_lookup(server: Any) -> None:
    live = server()
    token = live.create_source()["token"]
    with httpx.Client(base_url=live.url, timeout=10) as c:
        ok = {f"x-h{i}": "v" for i in range(90)}  # plus host, accept, user-agent, content-*...
        assert c.post(f"/v1/data/{token}", json={}, headers=ok).status_code == 200
        many = {f"x-h{i}": "v" for i in range(101)}
        r = c.post(f"/v1/data/{token}", json={}, headers=many)
        assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"
        r = c.post("/v1/data/no-such-token", json={}, headers=many)
        assert r.status_code == 431


def test_unknown_token_is_answered_at_headers_time_and_its_body_never_read(server: Any) -> None:
    live = server()
    s = connect(port_of(live))
    try:
        t0 = time.monotonic()
        s.sendall(b"POST /v1/data/no-such-token HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n")
        code, headers, body = read_response(s)
        assert code == 404 and error_code(body) == "not_found"
        assert time.monotonic() - t0 < 3
        assert headers["connection"] == "close"
        assert closed_within(s, 5), "the server kept the connection open to read a 50 MB body"
    finally:
        s.close()


def test_admin_api_checks_the_token_before_reading_the_body(server: Any) -> None:
    live = server()
    s = connect(port_of(live))
    try:
        t0 = time.monotonic()
        s.sendall(b"POST /api/v1/sources HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 104857600\r\n\r\n")
        code, headers, body = read_response(s)
        assert code == 401 and error_code(body) == "unauthorized"
        assert time.monotonic() - t0 < 3
        assert closed_within(s, 5)
    finally:
        s.close()


def test_admin_bodies_over_the_limit_get_413(server: Any) -> None:
    live = server()
    big = b'{"name": "' + b"a" * (3 << 20) + b'", "client_id": "acme"}'
    with live.admin() as c:
        r = c.post("/api/v1/sources", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 65536):
                yield big[i:i + 65536]

        r = c.post("/api/v1/sources", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/api/v1/sources", json={"name": "small", "client_id": "acme"})
        assert r.status_code == 201
        assert c.post("/api/v1/sources", content=b"{}", headers={"Authorization": "Bearer nope"}).status_code == 401
