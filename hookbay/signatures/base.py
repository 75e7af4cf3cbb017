"""What every signature scheme shares: the :class:`Scheme` record a scheme module defines, the
result and error types, and the helpers that read attacker-controlled header values and compare
digests.

* Header values are attacker-controlled: anything malformed is a ``bad_format`` SignatureError,
  never another exception (a 500 would be an oracle and a log-noise generator).
* :func:`check` compares every key's digest with every given signature in constant time, without
  stopping at the first match, so neither the timing nor the error tells a sender which secret came
  close.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hookbay.signatures import SignatureSpec

ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")

#: The reasons a :class:`SignatureError` can carry. ``no_secret`` means the source has no usable
#: secret configured (a configuration problem, reported like any other failure so that it is a 401
#: rather than a 500).
REASONS = ("missing_header", "bad_format", "timestamp_expired", "mismatch", "no_secret")

_DIGESTS: dict[str, Callable[..., Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
# Unix seconds: ASCII digits only (``\d`` would admit other scripts' digits) and bounded, so
# ``int()`` never meets a 5,000-digit string.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


class SignatureError(Exception):
    """The request is not authentically signed. ``reason`` (one of :data:`REASONS`) is for the
    operator's log only; it never says which secret was tried or how close it came."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifyResult:
    """A passed check. ``ping`` marks WooCommerce's unsigned save-time ping (store it, act on
    nothing). ``timestamp`` is the signed send time where the scheme has one. ``event_id`` is
    set only when the id is covered by the signature (Standard Webhooks' ``webhook-id``), so a
    caller may trust it for replay detection and idempotency."""

    ok: bool = True
    ping: bool = False
    timestamp: int | None = None
    event_id: str | None = None


#: ``verify(spec, keys, headers, body, now)``: ``keys`` are the active secrets' HMAC keys,
#: ``headers`` keyed by lower-case name, ``body`` the exact bytes received.
Verifier = Callable[["SignatureSpec", list[bytes], Mapping[str, str], bytes, float], VerifyResult]


def text_key(secret: str) -> bytes:
    """The key most providers use: the secret's text as given (Stripe's ``whsec_`` too)."""
    try:
        key = secret.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a signing secret must be valid text") from None
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


def random_text_secret() -> str:
    """32 random bytes as URL-safe base64 text."""
    return _random.token_urlsafe(32)


def _no_options(spec: SignatureSpec) -> None:
    """Most schemes fix their header, algorithm and encoding: nothing more to check."""


@dataclass(frozen=True)
class Scheme:
    """One way a provider signs its webhooks; each scheme module defines one as ``SCHEME`` and
    :mod:`hookbay.signatures.registry` lists it. The CLI help, the console's choices and the
    config model's allowed values all come from the registry."""

    name: str
    verify: Verifier
    key: Callable[[str], bytes] = text_key
    new_secret: Callable[[], str] = random_text_secret
    check_spec: Callable[[SignatureSpec], None] = _no_options
    #: The spec's header, algorithm, encoding and prefix matter (else the scheme fixes them), so a
    #: form offering only a name and a secret cannot set it up.
    configurable: bool = False
    #: ``tolerance_s`` matters: the scheme signs a send time.
    timestamped: bool = False


# --- parsing attacker-controlled header values ---------------------------------------------------


def header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` present with a non-blank value (stripped), else None."""
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise SignatureError("bad_format")
        value = value.strip()
        if value:
            return value
    return None


def timestamp(text: str) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureError("bad_format")
    return int(text)


def unhex(text: str) -> bytes | None:
    if not _HEX.fullmatch(text) or len(text) % 2:
        return None
    return binascii.unhexlify(text)  # either case: "compare lower-cased" without a text compare


def unb64(text: str) -> bytes | None:
    if not text.isascii():
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# --- comparing -----------------------------------------------------------------------------------


def mac(key: bytes, msg: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, msg, _DIGESTS[algorithm]).digest()


def check(keys: Sequence[bytes], message: bytes, given: Sequence[bytes], algorithm: str = "sha256") -> None:
    """Compare every key's digest with every given signature, all of them, in constant time each;
    raise ``mismatch`` unless one matched. No early exit, so which secret matched is unobservable."""
    matched = False
    for key in keys:
        expected = mac(key, message, algorithm)
        for candidate in given:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("mismatch")


def fresh(ts: int, now: float, tolerance: int, *, past_only: bool = False) -> None:
    if now - ts > tolerance or (not past_only and ts - now > tolerance):
        raise SignatureError("timestamp_expired")


def timestamped_mac(keys: Sequence[bytes], ts: int, signed_prefix: bytes, body: bytes, given: Sequence[bytes],
                    now: float, tolerance: int, *, past_only: bool = False,
                    event_id: str | None = None) -> VerifyResult:
    """HMAC-SHA256 over ``signed_prefix + body`` where the prefix carries the send time ``ts``
    (Slack, Stripe, Standard Webhooks). The signature is checked before freshness, so
    ``timestamp_expired`` always means an authentic but stale (replayed or clock-skewed) message,
    never a forgery."""
    if not given:
        raise SignatureError("bad_format")
    check(keys, signed_prefix + body, given)
    fresh(ts, now, tolerance, past_only=past_only)
    return VerifyResult(timestamp=ts, event_id=event_id)


def base64_body_mac(keys: list[bytes], headers: Mapping[str, str], body: bytes, name: str) -> VerifyResult:
    """HMAC-SHA256 of the body, base64, in header ``name`` (Shopify, WooCommerce)."""
    sig = header(headers, name)
    if sig is None:
        raise SignatureError("missing_header")
    raw = unb64(sig)
    if raw is None:
        raise SignatureError("bad_format")
    check(keys, body, [raw])
    return VerifyResult()
