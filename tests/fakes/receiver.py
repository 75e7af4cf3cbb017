"""A real HTTP receiver on loopback for delivery tests: records every request, answers from a
script of statuses, can be slow, and tracks how many requests it served at once."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    statuses: deque[int] = field(default_factory=deque)  # answered in order; then default_status
    default_status: int = 200
    delay_s: float = 0.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        rcv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n)
                with rcv.lock:
                    rcv.concurrent += 1
                    rcv.max_concurrent = max(rcv.max_concurrent, rcv.concurrent)
                    status = rcv.statuses.popleft() if rcv.statuses else rcv.default_status
                try:
                    if rcv.delay_s:
                        time.sleep(rcv.delay_s)
                    with rcv.lock:
                        rcv.received.append(Received(self.command, self.path,
                                                     {k.lower(): v for k, v in self.headers.items()}, body))
                    out = b'{"ok":true}' if status < 400 else b'{"error":"nope"}'
                    self.send_response(status)
                    for k, v in rcv.extra_headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                finally:
                    with rcv.lock:
                        rcv.concurrent -= 1

            do_PUT = do_POST  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
