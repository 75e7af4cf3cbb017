"""Who is asking and what they may reach: the one rule the API, the console and the CLI apply.

The admin token (and the CLI, which acts as the admin) sees every client; a client token sees only
its own client's objects, and another client's object answers 404, exactly like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from starlette.requests import HTTPConnection

from hookbay.audit import Actor, AuditEntry, cli_actor
from hookbay.errors import NotFound
from hookbay.settings import Settings


@dataclass(frozen=True)
class Principal:
    client_id: str | None
    token_id: str | None = None  # the client token's id (the admin token has none)
    peer: str | None = None  # where the request came from, for the audit log
    name: str | None = None  # the actor's name when it is not the token's (the CLI's ``cli:<os user>``)

    @classmethod
    def cli(cls) -> Principal:
        """The command line: the admin, audited as ``cli:<os user>`` from ``cli``."""
        a = cli_actor()
        return cls(None, peer=a.peer, name=a.name)

    @property
    def is_admin(self) -> bool:
        return self.client_id is None

    @property
    def actor(self) -> Actor:
        name = self.name or ("admin" if self.is_admin else f"client:{self.client_id}")
        return Actor(name=name, client_id=self.client_id, token_id=self.token_id, peer=self.peer)

    def audit(self, action: str, changes: list[str] | None = None, weakens: list[str] | None = None) -> AuditEntry:
        return AuditEntry(action=action, actor=self.actor, client_id=self.client_id, changes=changes or [],
                          weakens=weakens or [])


def scope_client(p: Principal, requested: str | None) -> str | None:
    """The client a caller may see: any (or the one asked for) for the admin, else its own; asking
    for another client's data is answered like a missing object."""
    if p.is_admin:
        return requested
    if requested is not None and requested != p.client_id:
        raise NotFound("Not Found")
    return p.client_id


def with_peer(p: Principal, request: HTTPConnection, settings: Settings) -> Principal:
    """The principal with where the request came from (proxy headers count only from trusted proxies)."""
    from hookbay.netaddr import client_address, parse_networks

    peer = client_address(request.client.host if request.client else None, request.scope.get("headers", []),
                          parse_networks(settings.trusted_proxy_list))
    return replace(p, peer=peer)
