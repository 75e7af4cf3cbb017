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
import functools
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hookbay.ingest.edge import (
    HEADERS_TOO_LARGE,
    REFUSE,
    REQUEST_TIMEOUT,
    RESERVED,
    TOO_MANY_CONNECTIONS,
    Edge,
)


class _CoalescingTransport:
    """Stands in for the connection's transport; holds a response head until the next write."""

    __slots__ = ("_t", "_head", "_proto")

    def __init__(self, transport: asyncio.Transport, proto: CoalescingHttpToolsProtocol | None = None) -> None:
        self._t = transport
        self._head: bytes | None = None
        self._proto = proto

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
        proto = self._proto
        if proto is not None and proto.body_pending:
            proto.linger()
        else:
            self._t.close()

    def is_closing(self) -> bool:
        return self._t.is_closing() or (self._proto is not None and self._proto.lingering)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._t.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._t.pause_reading()

    def resume_reading(self) -> None:
        self._t.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


_IDLE, _HEAD, _BODY = 0, 1, 2  # where the client is: between requests, in a head, in a body
_INGEST = (b"/v1/data/", b"/v1/test/")
_DEFAULT_EDGE = Edge()


class _Rejected(Exception):
    """Raised in a parser callback to stop parsing and answer ``response`` instead."""

    def __init__(self, response: bytes) -> None:
        self.response = response


def _is_ingest(url: bytes) -> bool:
    try:
        path = httptools.parse_url(url).path or b""
    except httptools.HttpParserInvalidURLError:
        return False
    if b"%" in path:
        path = unquote_to_bytes(path)
    return path.lower().startswith(_INGEST)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """Pass as ``uvicorn.Config(http=...)``; ``uvicorn_config`` does, with the server's ``Edge``.

    It also bounds what a client can hold (``hookbay.ingest.edge``): the head must arrive within
    ``header_timeout`` of the connection opening or of the previous response, a body may idle
    ``body_idle_timeout`` between bytes, an idle keep-alive connection closes after uvicorn's
    ``timeout_keep_alive``; heads over ``max_header_bytes`` or ``max_headers`` get 431 before any
    app runs; a response sent before its request's body arrived (unknown token, 401, 413) closes
    the connection, so that body is never read; connections over a cap get 503 at once. One
    timer per connection follows a deadline that usually only moves later, so the hot path only
    updates a number.
    """

    def __init__(self, *args: Any, edge: Edge | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = edge or _DEFAULT_EDGE
        self.body_pending = False
        self.lingering = False
        self._raw: asyncio.Transport | None = None
        self._peer: str | None = None
        self._reserved = False
        self._phase = _IDLE
        self._owed = False
        self._turn_start = 0.0
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._head_bytes = 0
        self._heads = 0
        self._keep_alive = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_CoalescingTransport(transport, self))  # type: ignore[arg-type]
        peer = self.client[0] if self.client else ""
        self._peer = peer
        verdict = self.edge.admit(self, peer)
        self._turn_start = now = self.loop.time()
        if verdict == REFUSE:
            self.reject(TOO_MANY_CONNECTIONS)
            return
        self._reserved = verdict == RESERVED
        self.edge.waiting[self] = None
        self._set_deadline(now + self.edge.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.waiting.pop(self, None)
        if self._peer is not None:
            self.edge.release(self._peer)
            self._peer = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = None
        self.body_pending = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if self._phase == _BODY:
            self._deadline = self.loop.time() + self.edge.body_idle_timeout  # only ever later: the timer catches up
        else:
            room = self.edge.max_header_bytes - self._head_bytes
            if len(data) > room:
                heads = self._heads
                if room > 0:
                    self._head_bytes += room
                    self._feed(data[:room])
                if self.transport.is_closing():
                    return
                if self._heads == heads:
                    self.reject(HEADERS_TOO_LARGE)
                    return
                self.data_received(data[room:])
                return
            self._head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received`` (its keep-alive timer is replaced by the deadline), plus
        the rejections raised by this class's callbacks."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _Rejected):
                self.reject(e.__context__.response)
                return
            self._bad_request()
        except httptools.HttpParserError:
            self._bad_request()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEAD
        if not self._owed:
            self._set_deadline(self._turn_start + self.edge.header_timeout)

    def on_headers_complete(self) -> None:
        self.edge.waiting.pop(self, None)
        self._heads += 1
        self._phase = _BODY
        self._owed = True
        if len(self.headers) > self.edge.max_headers:  # their bytes are already bounded
            raise _Rejected(HEADERS_TOO_LARGE)
        if self._reserved and _is_ingest(self.url):
            raise _Rejected(TOO_MANY_CONNECTIONS)
        super().on_headers_complete()
        cycle = self.cycle
        self.body_pending = True
        self._keep_alive = cycle.keep_alive
        cycle.keep_alive = False  # until the body is complete: an early answer closes
        self._set_deadline(self.loop.time() + self.edge.body_idle_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.body_pending:
            self.body_pending = False
            if not self.cycle.response_started:
                self.cycle.keep_alive = self._keep_alive
        self._phase = _IDLE
        self._head_bytes = 0
        self._deadline = None

    def on_response_complete(self) -> None:
        """uvicorn's, with the next head's deadline instead of its keep-alive timer."""
        self.transport.flush()  # type: ignore[attr-defined]
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._owed = False
        self.edge.waiting[self] = None
        self._turn_start = now = self.loop.time()
        if self._phase == _IDLE:
            self._set_deadline(now + self.timeout_keep_alive)
        elif self._phase == _HEAD:
            self._set_deadline(now + self.edge.header_timeout)

    def shutdown(self) -> None:
        self._keep_alive = False
        super().shutdown()

    def _set_deadline(self, when: float) -> None:
        self._deadline = when
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        when = self._deadline
        if when is None or self.lingering or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < when:
            self._set_deadline(when)
        elif self._phase == _BODY and self.flow.read_paused:
            self._set_deadline(now + self.edge.body_idle_timeout)  # the app is behind, not the client
        else:
            self._expire()

    def _expire(self) -> None:
        raw = self._raw
        assert raw is not None
        if self._phase == _HEAD:
            raw.write(REQUEST_TIMEOUT)
        elif self._phase == _BODY:
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                cycle.disconnected = True  # the app's receive() answers http.disconnect; its send() is dropped
                cycle.message_event.set()
                raw.write(REQUEST_TIMEOUT)
        self.body_pending = False
        raw.close()

    def evict(self) -> None:
        """Close now to make room for a new connection (see ``Edge.admit``)."""
        raw = self._raw
        assert raw is not None
        self.edge.waiting.pop(self, None)
        if self._peer is not None:
            self.edge.release(self._peer)
            self._peer = None
        if self._phase == _HEAD:
            raw.write(TOO_MANY_CONNECTIONS)
        raw.close()

    def reject(self, response: bytes) -> None:
        """Answer ``response`` with no app involved, then close."""
        raw = self._raw
        assert raw is not None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            raw.write(response)
            self.linger()
        else:  # a pipelined request's answer is still due: drop it rather than interleave
            cycle.disconnected = True
            cycle.message_event.set()
            raw.close()

    def linger(self) -> None:
        """Close after an answer without resetting the connection: send FIN, then drop what the
        client still sends for up to ``linger_seconds``. Closing with unread input would send a
        reset, which can discard the answer before the client reads it."""
        raw = self._raw
        if self.lingering or raw is None:
            return
        self.lingering = True
        self.body_pending = False
        self._deadline = None
        self.edge.waiting.pop(self, None)
        if raw.is_closing():
            return
        try:
            raw.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            raw.close()
            return
        self.flow.resume_reading()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.edge.linger_seconds, raw.close)


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


def uvicorn_config(app: Any, host: str, port: int, *, log_level: str = "warning", **options: Any) -> uvicorn.Config:
    """The one server configuration, for ``hookbay serve`` and the tests' live servers. Its
    connection limits come from ``app.settings`` (defaults for a bare ASGI app); building them
    lifts the soft open-files limit to the hard one. ``options`` go to ``uvicorn.Config`` as they
    are (``ssl_certfile``/``ssl_keyfile`` from ``hookbay.server.tls``)."""
    settings = getattr(app, "settings", None)
    edge = Edge.from_settings(settings) if settings is not None else Edge()
    http: Any = functools.partial(CoalescingHttpToolsProtocol, edge=edge)
    return uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http=http, ws="none", access_log=False,
        log_level=log_level, lifespan="on", proxy_headers=False, server_header=False,
        log_config=None, **options)  # uvicorn's records go through hookbay.logs (one JSON object per line)
