"""uvicorn's httptools protocol, answering each response with one socket write instead of two.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start``, then
the body in a second write. On loopback each ``send()`` runs the receiver's TCP stack and wakes its
reader, so the two writes cost the event loop nearly twice what one does: measured on the raw ASGI
app of ``bench/``, one write answered 35-40% more requests per second on the same machine. Here
the head is held back until the body (or the end of the response, for HEAD, 204 and 304) and both
go out together. ``100 Continue`` interim responses are never held: a client waits for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class _CoalescingTransport:
    """Stands in for the connection's transport; holds a response head until the next write."""

    __slots__ = ("_t", "_head")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._t = transport
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._t.write(head + bytes(data))
        elif data[:5] == b"HTTP/" and data[9:10] != b"1":
            self._head = bytes(data)
        else:
            self._t.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._t.write(head)

    def close(self) -> None:
        self.flush()
        self._t.close()

    def is_closing(self) -> bool:
        return self._t.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._t.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._t.pause_reading()

    def resume_reading(self) -> None:
        self._t.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """Pass as ``uvicorn.Config(http=...)``; ``uvicorn_config`` does."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()


def respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Send a whole response in one step when ``send`` belongs to this protocol; False otherwise.

    The hot path's responses are small and complete, so the ASGI start/body pair (two calls
    through uvicorn's generic ``send``, each re-validating headers) is a fixed cost per request
    that this skips. It sets the same cycle state uvicorn's ``send`` would; the headers must be
    the hot path's own (valid names and values, no ``connection`` or ``transfer-encoding``).
    Anything unusual (HEAD, a paused writer, a response already started) takes uvicorn's path.
    """
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if type(transport) is not _CoalescingTransport:
        return False
    if cycle.response_started or cycle.flow.write_paused or cycle.scope["method"] == "HEAD":
        return False
    if cycle.disconnected:
        return True
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    parts = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        parts += (name, b": ", value, b"\r\n")
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    transport.flush()
    transport._t.write(b"".join(parts))
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()
    return True


def uvicorn_config(app: Any, host: str, port: int, *, log_level: str = "warning") -> uvicorn.Config:
    """The one server configuration, for ``hookbay serve`` and the tests' live servers."""
    return uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http=CoalescingHttpToolsProtocol, access_log=False,
        log_level=log_level, lifespan="on", proxy_headers=False, server_header=False,
        log_config=None)  # uvicorn's records go through hookbay.logs (one JSON object per line)
