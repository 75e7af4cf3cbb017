"""A local stand-in for the Mailchimp Marketing API v3, spoken over real HTTP.

It covers the two calls the provider push makes (member upsert, member tags) and rejects malformed
calls the way Mailchimp documents (problem JSON, 400 "Invalid Resource", 401, 404), so a client bug
fails a test instead of passing against a lenient mock. ``app.state.fail_next`` injects failures
into the next calls for retry tests (e.g. ``[500, 429]``; ``None`` lets that call through); 429
answers carry ``Retry-After: app.state.retry_after``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ERRORS_DOC = "https://mailchimp.com/developer/marketing/docs/errors/"
STATUSES = {"subscribed", "unsubscribed", "cleaned", "pending", "transactional"}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_BIRTHDAY = re.compile(r"(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01])")
_TITLES = {
    400: "Bad Request", 401: "API Key Invalid", 403: "Forbidden", 404: "Resource Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None,
            errors: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": ERRORS_DOC, "title": title, "status": status, "detail": detail,
                            "instance": str(uuid.uuid4())}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def invalid(errors: list[dict[str, str]]) -> JSONResponse:
    return problem(400, "Invalid Resource",
                   "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
                   errors=errors)


def md5_lower(email: str) -> str:
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def create_app(api_key: str, lists: set[str]) -> Starlette:
    """A fake Mailchimp for ``api_key`` serving the audiences ``lists``, with in-memory state."""

    def authorised(request: Request) -> JSONResponse | None:
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not cred:
            return problem(401, "API Key Missing",
                           "Your request did not include an API key.")
        try:
            _, _, password = base64.b64decode(cred, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if password != api_key:
            return problem(401, "API Key Invalid",
                           "Your API key may be invalid, or you've attempted to access the wrong datacenter.")
        return None

    async def prelude(request: Request) -> tuple[Any, JSONResponse | None]:
        """Record the call, then apply injected failures, auth, list existence and JSON parsing."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
            parse_error = False
        except ValueError:
            body, parse_error = None, True
        app.state.calls.append({"method": request.method, "path": request.url.path, "json": body,
                                "headers": dict(request.headers)})
        code = app.state.fail_next.pop(0) if app.state.fail_next else None
        if code is not None:
            hdrs = {"Retry-After": str(app.state.retry_after)} if code == 429 else None
            detail = ("You have exceeded the limit of 10 simultaneous connections." if code == 429
                      else "An unexpected internal error has occurred.")
            return None, problem(code, _TITLES.get(code, "Error"), detail, headers=hdrs)
        if (err := authorised(request)) is not None:
            return None, err
        if request.path_params["list_id"] not in lists:
            return None, problem(404, "Resource Not Found", "The requested resource could not be found.")
        if parse_error:
            return None, problem(400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error.")
        return body, None

    def validate_merge_fields(merge: Any) -> list[dict[str, str]]:
        if not isinstance(merge, dict):
            return [{"field": "merge_fields", "message": "Schema describes object, NULL found instead"
                     if merge is None else f"Schema describes object, {type(merge).__name__} found instead"}]
        errs: list[dict[str, str]] = []
        for k, v in merge.items():
            if k == "ADDRESS":
                if isinstance(v, dict):
                    if not all(isinstance(v.get(p), str) and v.get(p) for p in ("addr1", "city", "state", "zip")):
                        errs.append({"field": "ADDRESS", "message": "Please enter a complete address"})
                elif v != "":
                    errs.append({"field": "ADDRESS", "message": "Please enter a complete address"})
            elif k == "BIRTHDAY":
                if not (isinstance(v, str) and (v == "" or _BIRTHDAY.fullmatch(v))):
                    errs.append({"field": "BIRTHDAY", "message": "Please enter the date in MM/DD format"})
            elif not isinstance(v, str | int | float):
                errs.append({"field": k, "message": "Data did not match any of the schemas described in anyOf."})
        return errs

    def member_view(list_id: str, m: dict[str, Any]) -> dict[str, Any]:
        tags = sorted(app.state.tags.get((list_id, m["id"]), set()))
        return {**m, "list_id": list_id, "tags_count": len(tags),
                "tags": [{"id": i + 1, "name": t} for i, t in enumerate(tags)]}

    async def put_member(request: Request) -> Response:
        body, err = await prelude(request)
        if err is not None:
            return err
        list_id, h = request.path_params["list_id"], request.path_params["subscriber_hash"]
        if not isinstance(body, dict):
            return invalid([{"field": "", "message": "Schema describes object, NULL found instead"}])
        email = body.get("email_address")
        if not isinstance(email, str) or not email:
            return invalid([{"field": "email_address", "message": "This value should not be blank."}])
        if not _EMAIL.fullmatch(email):
            return problem(400, "Invalid Resource", f"{email} looks fake or invalid, please enter a real email address.")
        if md5_lower(email) != h.lower():
            return problem(400, "Invalid Resource",
                           "The subscriber hash in the URL does not match the email address provided.")
        errs: list[dict[str, str]] = []
        for key in ("status_if_new", "status"):
            if key in body and body[key] not in STATUSES:
                errs.append({"field": key, "message": f"Value is not one of: {', '.join(sorted(STATUSES))}"})
        if "merge_fields" in body:
            errs += validate_merge_fields(body["merge_fields"])
        if errs:
            return invalid(errs)
        h = h.lower()
        existing = app.state.members.get((list_id, h))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        if existing is None:
            status = body.get("status") or body.get("status_if_new")
            if status is None:
                return invalid([{"field": "status_if_new",
                                 "message": "The status_if_new field is required for a new list member."}])
            member = {"id": h, "email_address": email, "unique_email_id": uuid.uuid4().hex[:10],
                      "status": status, "merge_fields": dict(body.get("merge_fields") or {}),
                      "timestamp_signup": now, "last_changed": now}
            app.state.members[(list_id, h)] = member
            return JSONResponse(member_view(list_id, member))
        new_status = body.get("status")
        if new_status == "subscribed" and existing["status"] in ("unsubscribed", "cleaned"):
            return problem(400, "Member In Compliance State",
                           f"{email} is already a list member in compliance state due to unsubscribe, "
                           "bounce, or compliance review.")
        existing["email_address"] = email
        if new_status is not None:
            existing["status"] = new_status
        existing["merge_fields"].update(body.get("merge_fields") or {})
        existing["last_changed"] = now
        return JSONResponse(member_view(list_id, existing))

    async def post_tags(request: Request) -> Response:
        body, err = await prelude(request)
        if err is not None:
            return err
        list_id, h = request.path_params["list_id"], request.path_params["subscriber_hash"].lower()
        if (list_id, h) not in app.state.members:
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        tags = body.get("tags") if isinstance(body, dict) else None
        if not isinstance(tags, list):
            return invalid([{"field": "tags", "message": "Schema describes array, NULL found instead"}])
        errs = [{"field": f"tags.item:{i}", "message": "Each tag needs a name and a status of active or inactive"}
                for i, t in enumerate(tags)
                if not (isinstance(t, dict) and isinstance(t.get("name"), str) and 0 < len(t["name"]) <= 100
                        and t.get("status") in ("active", "inactive"))]
        if errs:
            return invalid(errs)
        have: set[str] = app.state.tags.setdefault((list_id, h), set())
        for t in tags:
            (have.add if t["status"] == "active" else have.discard)(t["name"])
        return Response(status_code=204)

    async def get_member(request: Request) -> Response:
        _, err = await prelude(request)
        if err is not None:
            return err
        list_id, h = request.path_params["list_id"], request.path_params["subscriber_hash"]
        m = app.state.members.get((list_id, h.lower()))
        if m is None:
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        return JSONResponse(member_view(list_id, m))

    app = Starlette(routes=[
        Route("/3.0/lists/{list_id}/members/{subscriber_hash}", put_member, methods=["PUT"]),
        Route("/3.0/lists/{list_id}/members/{subscriber_hash}", get_member, methods=["GET"]),
        Route("/3.0/lists/{list_id}/members/{subscriber_hash}/tags", post_tags, methods=["POST"]),
    ])
    app.state.members = {}
    app.state.tags = {}
    app.state.calls = []
    app.state.fail_next = []
    app.state.retry_after = "2"
    return app


def run_in_thread(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` with uvicorn on a free loopback port; returns ``(base_url, stop)``.

    ``base_url`` ends in ``/3.0`` like the real API's, so it can be passed to ``MailchimpClient`` as is.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("fake Mailchimp server did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return f"http://127.0.0.1:{port}/3.0", stop
