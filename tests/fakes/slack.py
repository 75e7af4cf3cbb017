"""A local stand-in for a Slack incoming webhook: it answers ``ok`` only to a body Slack would
accept (a JSON object with a non-empty ``text``, and ``blocks``, if any, made of known block types
with well-formed text objects), else ``400 invalid_payload`` as Slack does."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BLOCK_TYPES = {"section", "header", "context", "divider", "actions", "image", "rich_text"}
TEXT_TYPES = {"plain_text", "mrkdwn"}


def _text_ok(t: Any) -> bool:
    return isinstance(t, dict) and t.get("type") in TEXT_TYPES and isinstance(t.get("text"), str) and bool(t["text"])


def valid_slack_body(body: Any) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
        return False
    blocks = body.get("blocks", [])
    if not isinstance(blocks, list):
        return False
    for b in blocks:
        if not isinstance(b, dict) or b.get("type") not in BLOCK_TYPES:
            return False
        if b["type"] == "header" and not (_text_ok(b.get("text")) and b["text"]["type"] == "plain_text"):
            return False
        if b["type"] == "section" and not _text_ok(b.get("text")):
            return False
        if b["type"] == "context" and not (isinstance(b.get("elements"), list) and b["elements"]
                                           and all(_text_ok(e) for e in b["elements"])):
            return False
    return True


class FakeSlack:
    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[bytes] = []
        self.lock = threading.Lock()
        slack = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                    ok = self.headers.get("content-type", "").startswith("application/json") and valid_slack_body(body)
                except ValueError:
                    ok = False
                with slack.lock:
                    (slack.accepted.append(body) if ok else slack.refused.append(raw))
                out = b"ok" if ok else b"invalid_payload"
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/services/T000/B000/XXXX"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
