"""The admin API's door: the bearer token is checked, and the body bounded, before any body byte is read.

FastAPI reads and parses a route's body before it runs the route's dependencies (where the token
is checked), so without this door anyone could make the server buffer a body of any size.
"""

from __future__ import annotations

from typing import Any

from hookbay.errors import HookbayError, PayloadTooLarge, Unauthorized
from hookbay.ingest.asgi import Message, Receive, Scope, Send, send_json
from hookbay.ingest.endpoint import ClientGone, read_body
from hookbay.ops.tokens import principal_for_token
from hookbay.store import Store

RELAY_AGENT_PATH = "/api/v1/relay/messages"  # the agent's routes take relay tokens


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
            return True
    return False


class AdminGuard:
    """Wraps the admin FastAPI app. Requests without a body pass straight through (the routes
    check their token as before), as do paths outside ``/api/`` (no route there reads a body: a
    404 must look like an unknown ingest token's); a request with one is answered 401 or 413 at
    headers time, or read here (at most ``max_body`` bytes) and handed on with the principal
    already known."""

    def __init__(self, app: Any, store: Store, admin_hash_ref: dict[str, str | None], max_body: int) -> None:
        self.app = app
        self.store = store
        self.admin_hash_ref = admin_hash_ref
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/") or not _has_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        try:
            await self._authenticate(scope)
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                    raise PayloadTooLarge(detail={"limit_bytes": self.max_body})
            body = await read_body(receive, self.max_body)
        except ClientGone:
            return
        except HookbayError as e:
            await send_json(send, e.status, e.to_dict(), e.headers)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(self, scope: Scope) -> None:
        token = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
                break
        if not token:
            raise Unauthorized("Bearer token required", headers={"WWW-Authenticate": "Bearer"})
        if scope["path"].startswith(RELAY_AGENT_PATH):
            if await self.app.state.relay_hub.queue.authenticate(token) is None:
                raise Unauthorized("Invalid relay token", headers={"WWW-Authenticate": "Bearer"})
            return
        scope["hookbay.principal"] = await principal_for_token(self.store, self.admin_hash_ref, token)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then defers to the connection's (for
    the disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
