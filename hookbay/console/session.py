"""Console sessions and CSRF tokens.

The session cookie holds ``v1.<token hash>.<expiry>.<mac>``: the SHA-256 hash of the token that
logged in (never the token itself), an expiry, and an HMAC over both with a server secret. Each
page asks the admin API's own check (:func:`hookbay.ops.tokens.principal_for_hash`) who that hash
belongs to now, so a revoked client token or a rotated admin token ends its sessions at once.

The server secret lives in the ``meta`` table (sealed with the encryption key when one is set), so
every ``serve`` process sharing a PostgreSQL database accepts the same cookies, and sessions
survive a restart. Logging out records the cookie as revoked in ``meta`` until it would expire.
CSRF tokens are HMACs of the session cookie value with that secret (and, before
login, of a random nonce cookie), so they need no server-side state either.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from hookbay.netaddr import in_networks, parse_networks
from hookbay.ops import sessions as session_ops
from hookbay.store import Store

SESSION_COOKIE = "hookbay_session"
LOGIN_COOKIE = "hookbay_login"
COOKIE_PATH = "/ui"
SESSION_SECONDS = 12 * 3600
LOGIN_NONCE_SECONDS = 3600
META_KEY = "console_secret"
REVOKED_PREFIX = "session_revoked:"


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str
    expires: int
    cookie: str


class Sessions:
    def __init__(self, store: Store, trusted_proxies: list[str]) -> None:
        self.store = store
        self.trusted = parse_networks(trusted_proxies)
        self._secret: bytes | None = None
        self._lock = asyncio.Lock()

    async def secret(self) -> bytes:
        """Load (or on first use create) the shared secret; a secret sealed with a key that is no
        longer configured is replaced, which only logs everyone out."""
        if self._secret is not None:
            return self._secret
        async with self._lock:
            if self._secret is None:
                self._secret = await session_ops.shared_secret(self.store, META_KEY, secrets.token_bytes(32))
        return self._secret

    def _mac(self, secret: bytes, *parts: str) -> str:
        msg = "|".join(parts).encode()
        return base64.urlsafe_b64encode(hmac.new(secret, msg, hashlib.sha256).digest()).decode().rstrip("=")

    async def issue(self, token_hash: str) -> str:
        secret = await self.secret()
        expires = int(time.time()) + SESSION_SECONDS
        return f"v1.{token_hash}.{expires}.{self._mac(secret, 'session', token_hash, str(expires))}"

    async def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if its MAC holds and it has not expired."""
        if not cookie or len(cookie) > 300:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[2].isdigit():
            return None
        _, token_hash, expires, mac = parts
        secret = await self.secret()
        if not hmac.compare_digest(mac, self._mac(secret, "session", token_hash, expires)):
            return None
        if int(expires) < time.time():
            return None
        if await session_ops.is_revoked(self.store, _revoked_key(cookie)):
            return None
        return Session(token_hash=token_hash, expires=int(expires), cookie=cookie)

    async def revoke(self, session: Session) -> None:
        """Logout: the cookie stops working on every process at once, not only in this browser (a
        copied or replayed cookie is refused too). Revocations are kept until the cookie would
        have expired anyway; expired ones are dropped at each logout."""
        await session_ops.revoke(self.store, _revoked_key(session.cookie), session.expires, REVOKED_PREFIX,
                                 int(time.time()))

    async def csrf_token(self, session: Session) -> str:
        return self._mac(await self.secret(), "csrf", session.cookie)

    async def login_csrf_token(self, nonce: str) -> str:
        return self._mac(await self.secret(), "login", nonce)

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)

    def is_https(self, scheme: str, peer: str | None, forwarded_proto: str | None) -> bool:
        """Mark cookies Secure when the browser talks https: directly, or through a trusted proxy
        that says so (the same HOOKBAY_TRUSTED_PROXIES the ingest believes)."""
        if scheme == "https":
            return True
        if forwarded_proto and self.trusted and in_networks(peer, self.trusted):
            return forwarded_proto.split(",")[0].strip().lower() == "https"
        return False


def _revoked_key(cookie: str) -> str:
    return REVOKED_PREFIX + hashlib.sha256(cookie.encode()).hexdigest()[:40]


def check(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
