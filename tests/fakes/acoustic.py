"""A local stand-in for Acoustic Campaign over real HTTP: the OAuth2 refresh-token endpoint
(``POST /oauth/token``, form fields, JSON answer with ``access_token`` and ``expires_in``) and the
XML API (``POST /XMLAPI`` with a bearer token) for ``AddRecipient`` (``UPDATE_IF_FOUND``,
``SYNC_FIELDS`` on EMAIL) and ``OptOutRecipient``, answering ``Envelope/Body/RESULT`` with
``SUCCESS`` and, on errors, a ``Fault``, as documented. Strict: a missing or unknown field, a
wrong grant type or an unknown list is refused. ``state.expire_tokens()`` invalidates issued tokens
(the next call gets a 401); ``state.fail_next`` queues statuses (e.g. ``[429]``) with
``Retry-After: state.retry_after``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

from defusedxml.ElementTree import fromstring
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class State:
    client_id: str
    client_secret: str
    refresh_token: str
    lists: set[str]
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    recipients: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    retry_after: str = "0"
    _ids: Any = field(default_factory=lambda: itertools.count(1001))

    def expire_tokens(self) -> None:
        self.tokens.clear()


def _xml(result: dict[str, str] | None = None, fault: str | None = None) -> Response:
    env = ET.Element("Envelope")
    body = ET.SubElement(env, "Body")
    res = ET.SubElement(body, "RESULT")
    ET.SubElement(res, "SUCCESS").text = "false" if fault else "TRUE"
    for k, v in (result or {}).items():
        ET.SubElement(res, k).text = v
    if fault:
        f = ET.SubElement(body, "Fault")
        ET.SubElement(f, "Request")
        ET.SubElement(f, "FaultCode")
        ET.SubElement(f, "FaultString").text = fault
    return Response(ET.tostring(env), media_type="text/xml")


def create_app(client_id: str, client_secret: str, refresh_token: str, lists: set[str]) -> Starlette:
    state = State(client_id, client_secret, refresh_token, set(lists))

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        state.token_requests += 1
        if form.get("grant_type") != "refresh_token":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if (form.get("client_id"), form.get("client_secret"), form.get("refresh_token")) != (
                state.client_id, state.client_secret, state.refresh_token):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        tok = f"tok-{next(state._ids)}"
        state.tokens.add(tok)
        return JSONResponse({"access_token": tok, "token_type": "bearer", "expires_in": 14399,
                             "refresh_token": state.refresh_token})

    async def xmlapi(request: Request) -> Response:
        if state.fail_next:
            status = state.fail_next.pop(0)
            return Response("busy", status_code=status, headers={"Retry-After": state.retry_after})
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in state.tokens:
            return Response("", status_code=401)
        if not request.headers.get("content-type", "").startswith("text/xml"):
            return _xml(fault="Content-Type must be text/xml")
        try:
            root = fromstring(await request.body())
        except Exception:
            return _xml(fault="Invalid XML")
        op = root.find("./Body/*")
        if root.tag != "Envelope" or op is None:
            return _xml(fault="Expected Envelope/Body/<operation>")
        list_id = op.findtext("LIST_ID")
        if list_id not in state.lists:
            return _xml(fault=f"List {list_id} not found")
        if op.tag == "AddRecipient":
            if op.findtext("UPDATE_IF_FOUND") != "true":
                return _xml(fault="UPDATE_IF_FOUND expected")
            sync = {s.findtext("NAME"): s.findtext("VALUE") for s in op.findall("./SYNC_FIELDS/SYNC_FIELD")}
            cols = {c.findtext("NAME"): c.findtext("VALUE") for c in op.findall("COLUMN")}
            email = (sync.get("EMAIL") or "").lower()
            if not email or cols.get("EMAIL", "").lower() != email:
                return _xml(fault="EMAIL sync field and column required")
            key = (list_id, email)
            rec = state.recipients.setdefault(key, {"id": str(next(state._ids)), "opted_out": False})
            rec.update(columns=cols, created_from=op.findtext("CREATED_FROM"), opted_out=False)
            state.calls.append(("AddRecipient", {"list": list_id, **cols}))
            return _xml({"RecipientId": rec["id"], "ORGANIZATION_ID": "org-1"})
        if op.tag == "OptOutRecipient":
            key = (list_id, (op.findtext("EMAIL") or "").lower())
            if key not in state.recipients:
                return _xml(fault="Recipient not found")
            state.recipients[key]["opted_out"] = True
            state.calls.append(("OptOutRecipient", {"list": list_id}))
            return _xml({})
        return _xml(fault=f"Unsupported operation {op.tag}")

    app = Starlette(routes=[Route("/oauth/token", token, methods=["POST"]),
                            Route("/XMLAPI", xmlapi, methods=["POST"])])
    app.state.acoustic = state
    return app
