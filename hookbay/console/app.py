"""The web console under ``/ui/``: server-rendered pages over the same operations as the admin API.

Its own Starlette app (not part of the admin API's OpenAPI document), dispatched by the root app.
Authentication is the admin API's token check behind a login form and a session cookie; a client
token sees only its client's objects through the operations layer's scoping
(:func:`hookbay.ops.access.scope_client`), and another client's object answers 404 exactly as in
the API. Every POST carries a CSRF token; every page is sent with a CSP that allows no inline
script or style, and may not be framed.

This module only composes: the pages live in their modules, which build on
:mod:`hookbay.console.base` (the ``Console`` core) and never import this one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hookbay.console import alerts as alert_pages
from hookbay.console import audit as audit_pages
from hookbay.console import bulk as bulk_pages
from hookbay.console import charts, delivery_pages, login, playground, request_pages
from hookbay.console import mapping as mapping_pages
from hookbay.console import profiles as profile_pages
from hookbay.console import rerun as rerun_pages
from hookbay.console import sources as source_pages
from hookbay.console import tokens as token_pages
from hookbay.console.base import Console, Ctx
from hookbay.settings import Settings
from hookbay.store import Store
from hookbay.store.sources import SourceCache

Page = Callable[[Console, Request, Ctx], Awaitable[Response]]


def _routes(console: Console) -> list[BaseRoute]:
    """The route table, in matching order; the pages without a session (login, the tail's JSON, which
    answers 401 itself) take the console as their first argument too."""

    def page(fn: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session (see :meth:`Console.route`)."""
        return console.route(lambda rq, c: fn(console, rq, c))

    return [
        Route("/ui", partial(login.to_slash, console)),
        Route("/ui/login", partial(login.login_page, console), methods=["GET"]),
        Route("/ui/login", partial(login.login_submit, console), methods=["POST"]),
        Route("/ui/logout", page(login.logout), methods=["POST"]),
        Route("/ui/", page(request_pages.tail), methods=["GET"]),
        Route("/ui/api/requests", partial(request_pages.tail_json, console), methods=["GET"]),
        Route("/ui/requests/{request_id}", page(request_pages.request_page), methods=["GET"]),
        Route("/ui/requests/{request_id}/body", page(request_pages.request_body), methods=["GET"]),
        Route("/ui/requests/{request_id}/replay", page(rerun_pages.replay), methods=["POST"]),
        Route("/ui/requests/{request_id}/redeliver", page(rerun_pages.confirm_redeliver), methods=["GET"]),
        Route("/ui/requests/{request_id}/redeliver", page(rerun_pages.redeliver), methods=["POST"]),
        Route("/ui/requests/{request_id}/resend", page(rerun_pages.resend), methods=["POST"]),
        *source_pages.routes(console),
        *mapping_pages.routes(console),
        Route("/ui/playground", page(playground.playground), methods=["GET", "POST"]),
        Route("/ui/profiles", page(profile_pages.search), methods=["GET"]),
        Route("/ui/profiles/{profile_id}", page(profile_pages.detail), methods=["GET"]),
        Route("/ui/profiles/{profile_id}/export", page(profile_pages.export), methods=["GET"]),
        Route("/ui/profiles/{profile_id}/erase", page(profile_pages.confirm_erase), methods=["GET"]),
        Route("/ui/profiles/{profile_id}/erase", page(profile_pages.erase), methods=["POST"]),
        Route("/ui/deliveries", page(delivery_pages.deliveries), methods=["GET"]),
        Route("/ui/deliveries/{delivery_id}", page(delivery_pages.delivery_page), methods=["GET"]),
        Route("/ui/deliveries/{delivery_id}/retry", page(delivery_pages.retry_delivery), methods=["POST"]),
        Route("/ui/charts", page(charts.page), methods=["GET"]),
        Route("/ui/tokens", page(token_pages.page), methods=["GET"]),
        Route("/ui/tokens", page(token_pages.create), methods=["POST"]),
        Route("/ui/tokens/relay", page(token_pages.create_relay), methods=["POST"]),
        Route("/ui/tokens/relay/{relay_token_id}/revoke", page(token_pages.revoke_relay), methods=["POST"]),
        Route("/ui/tokens/{token_id}/revoke", page(token_pages.revoke), methods=["POST"]),
        Route("/ui/bulk/requests", page(bulk_pages.confirm_requests), methods=["GET"]),
        Route("/ui/bulk/requests", page(bulk_pages.run_requests), methods=["POST"]),
        Route("/ui/bulk/deliveries", page(bulk_pages.confirm_deliveries), methods=["GET"]),
        Route("/ui/bulk/deliveries", page(bulk_pages.run_deliveries), methods=["POST"]),
        Route("/ui/alerts", page(alert_pages.page), methods=["GET"]),
        Route("/ui/audit", page(audit_pages.page), methods=["GET"]),
        Mount("/ui/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
    ]


def create_console_app(store: Store, cache: SourceCache, settings: Settings,
                       admin_hash_ref: dict[str, str | None]) -> Console:
    return Console(store, cache, settings, admin_hash_ref, _routes)
