"""Raw ASGI ceiling: read the whole body, answer 200 {"status":"accepted"}.

No framework, no parsing, no storage -- the fastest a Python ASGI server on
uvicorn can acknowledge a POST on this machine.

    uvicorn bench.raw_asgi:app --loop uvloop --http httptools --no-access-log --log-level warning
"""

from __future__ import annotations

_BODY = b'{"status":"accepted"}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
