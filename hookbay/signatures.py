"""Verify webhook signatures the way each provider signs them, over the exact bytes received.

Why it is built this way:

* Every digest is computed over the raw body bytes; nothing is parsed or re-encoded first, because
  a single changed byte (whitespace, key order, a re-encoded character) must fail.
* Every active secret is tried (two are active during a rotation) and every candidate signature is
  compared with :func:`hmac.compare_digest`, without stopping at the first match, so neither the
  timing nor the error tells a sender which secret came close.
* Failures raise :class:`SignatureError` with a short machine ``reason`` for the operator's log;
  the sender is only ever told "invalid signature".
* Header values are attacker-controlled: anything malformed is a ``bad_format`` SignatureError,
  never another exception (a 500 would be an oracle and a log-noise generator).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SCHEMES = ("standard", "github", "stripe", "shopify", "woocommerce", "slack", "hmac")
ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")

#: The reasons a :class:`SignatureError` can carry. ``no_secret`` means the source has no usable
#: secret configured (a configuration problem, reported like any other failure so that it is a 401
#: rather than a 500).
REASONS = ("missing_header", "bad_format", "timestamp_expired", "mismatch", "no_secret")

_DIGESTS: dict[str, Callable[..., Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
_STANDARD_PREFIX = "whsec_"
# RFC 9110 token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Unix seconds: ASCII digits only (``\d`` would admit other scripts' digits) and bounded, so
# ``int()`` never meets a 5,000-digit string.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
# The body WooCommerce posts, unsigned, when a webhook is saved (WC_Webhook::deliver_ping).
_WC_PING = re.compile(rb"webhook_id=[0-9]{1,20}")


@dataclass(frozen=True)
class SignatureSpec:
    """How a source's requests are signed. ``header``/``algorithm``/``encoding``/``prefix`` only
    matter for ``hmac`` (other schemes fix them); ``tolerance_s`` for standard, stripe and slack."""

    scheme: str
    header: str | None = None
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    tolerance_s: int = 300

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown signature scheme {self.scheme!r}; expected one of {', '.join(SCHEMES)}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; expected one of {', '.join(ENCODINGS)}")
        if isinstance(self.tolerance_s, bool) or not isinstance(self.tolerance_s, int) or self.tolerance_s < 1:
            raise ValueError("tolerance_s must be a positive number of seconds")
        if not isinstance(self.prefix, str) or (self.prefix and not _PRINTABLE_ASCII.fullmatch(self.prefix)):
            raise ValueError("prefix must be printable ASCII without spaces")
        if self.scheme == "hmac":
            if not self.header:
                raise ValueError("scheme 'hmac' needs a header name")
            if not _TOKEN.fullmatch(self.header):
                raise ValueError(f"{self.header!r} is not a valid header name")


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


# --- secrets -------------------------------------------------------------------------------------


def _standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, derived exactly as the ``standardwebhooks``
    library does: strip ``whsec_`` if present, then base64-decode (padding added, lenient), so a
    secret works identically here and in every other implementation."""
    s = secret[len(_STANDARD_PREFIX):] if secret.startswith(_STANDARD_PREFIX) else secret
    try:
        key = base64.b64decode(s + "==")
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret must be base64 (optionally prefixed 'whsec_')") from None
    if not key:
        raise ValueError("a Standard Webhooks secret may not be empty")
    return key


def _key(scheme: str, secret: str) -> bytes:
    if not isinstance(secret, str):
        raise ValueError("a signing secret must be text")
    if scheme == "standard":
        return _standard_key(secret)
    # Every other provider uses the secret's text as the key, as given (Stripe's ``whsec_`` too).
    try:
        key = secret.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a signing secret must be valid text") from None
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


def validate_secret(scheme: str, secret: str) -> None:
    """Raise ValueError if ``secret`` cannot be used with ``scheme`` — call it when a secret is
    saved, so a typo is refused then rather than turning every delivery into a 401."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    _key(scheme, secret)


def _keys(scheme: str, secrets: Sequence[str]) -> list[bytes]:
    if isinstance(secrets, str | bytes):  # a lone string would be tried one character at a time
        raise TypeError("secrets must be a sequence of strings, not a string")
    keys = []
    for s in secrets:
        try:
            keys.append(_key(scheme, s))
        except ValueError:
            continue  # an unusable secret can never match; the others still may
    if not keys:
        raise SignatureError("no_secret")
    return keys


# --- parsing attacker-controlled header values ---------------------------------------------------


def _header(headers: Mapping[str, str], *names: str) -> str | None:
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


def _timestamp(text: str) -> int:
    if not _TIMESTAMP.fullmatch(text):
        raise SignatureError("bad_format")
    return int(text)


def _unhex(text: str) -> bytes | None:
    if not _HEX.fullmatch(text) or len(text) % 2:
        return None
    return binascii.unhexlify(text)  # either case: "compare lower-cased" without a text compare


def _unb64(text: str) -> bytes | None:
    if not text.isascii():
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# --- comparing -----------------------------------------------------------------------------------


def _mac(key: bytes, msg: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key, msg, _DIGESTS[algorithm]).digest()


def _check(keys: Sequence[bytes], message: bytes, given: Sequence[bytes], algorithm: str = "sha256") -> None:
    """Compare every key's digest with every given signature, all of them, in constant time each;
    raise ``mismatch`` unless one matched. No early exit, so which secret matched is unobservable."""
    matched = False
    for key in keys:
        expected = _mac(key, message, algorithm)
        for candidate in given:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("mismatch")


def _fresh(ts: int, now: float, tolerance: int, *, past_only: bool = False) -> None:
    if now - ts > tolerance or (not past_only and ts - now > tolerance):
        raise SignatureError("timestamp_expired")


# --- the schemes ---------------------------------------------------------------------------------


def _standard(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
              now: float) -> VerifyResult:
    msg_id = _header(headers, "webhook-id", "svix-id")
    ts_text = _header(headers, "webhook-timestamp", "svix-timestamp")
    sig_text = _header(headers, "webhook-signature", "svix-signature")
    if msg_id is None or ts_text is None or sig_text is None:
        raise SignatureError("missing_header")
    # The id is part of the signed content: only printable ASCII has one unambiguous byte form.
    if not _PRINTABLE_ASCII.fullmatch(msg_id):
        raise SignatureError("bad_format")
    ts = _timestamp(ts_text)
    given = []
    for entry in sig_text.split():
        version, _, value = entry.partition(",")
        if version != "v1":  # v1a (asymmetric) and future versions are not ours to check
            continue
        raw = _unb64(value)
        if raw is not None:
            given.append(raw)
    if not given:
        raise SignatureError("bad_format")
    # Signature before freshness, so ``timestamp_expired`` always means an authentic but stale
    # (replayed or clock-skewed) message, never a forgery.
    _check(keys, f"{msg_id}.{ts}.".encode() + body, given)
    _fresh(ts, now, spec.tolerance_s)
    return VerifyResult(timestamp=ts, event_id=msg_id)


def _stripe(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
            now: float) -> VerifyResult:
    header = _header(headers, "stripe-signature")
    if header is None:
        raise SignatureError("missing_header")
    ts_texts: list[str] = []
    v1: list[str] = []
    for item in header.split(","):
        k, eq, v = item.partition("=")
        if not eq:
            continue
        k, v = k.strip(), v.strip()
        if k == "t":
            ts_texts.append(v)
        elif k == "v1":  # v0 and other schemes are ignored, as stripe's own library does
            v1.append(v)
    if len(ts_texts) != 1 or not v1:
        raise SignatureError("bad_format")
    ts = _timestamp(ts_texts[0])
    given = [raw for v in v1 if (raw := _unhex(v)) is not None]
    if not given:
        raise SignatureError("bad_format")
    _check(keys, f"{ts}.".encode() + body, given)
    # Like stripe.WebhookSignature.verify_header: only too-old is refused (replays); Stripe never
    # dates a signature ahead, so a future one is our clock lagging.
    _fresh(ts, now, spec.tolerance_s, past_only=True)
    return VerifyResult(timestamp=ts)


def _slack(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
           now: float) -> VerifyResult:
    sig = _header(headers, "x-slack-signature")
    ts_text = _header(headers, "x-slack-request-timestamp")
    if sig is None or ts_text is None:
        raise SignatureError("missing_header")
    ts = _timestamp(ts_text)
    version, eq, value = sig.partition("=")
    raw = _unhex(value) if eq and version == "v0" else None
    if raw is None:
        raise SignatureError("bad_format")
    # Slack's base string uses the timestamp header exactly as sent.
    _check(keys, f"v0:{ts_text}:".encode() + body, [raw])
    _fresh(ts, now, spec.tolerance_s)
    return VerifyResult(timestamp=ts)


def _github(keys: list[bytes], headers: Mapping[str, str], body: bytes) -> VerifyResult:
    sig = _header(headers, "x-hub-signature-256")
    if sig is None:
        raise SignatureError("missing_header")
    raw = _unhex(sig[len("sha256="):]) if sig.startswith("sha256=") else None
    if raw is None:
        raise SignatureError("bad_format")
    _check(keys, body, [raw])
    return VerifyResult()


def _base64_body_mac(keys: list[bytes], headers: Mapping[str, str], body: bytes, name: str,
                     *, woocommerce: bool = False) -> VerifyResult:
    sig = _header(headers, name)
    if sig is None:
        # WooCommerce's save-time ping carries no signature; accept exactly that body and nothing
        # else, and flag it so the caller never treats it as an event.
        if woocommerce and _WC_PING.fullmatch(body):
            return VerifyResult(ping=True)
        raise SignatureError("missing_header")
    raw = _unb64(sig)
    if raw is None:
        raise SignatureError("bad_format")
    _check(keys, body, [raw])
    return VerifyResult()


def _generic(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes) -> VerifyResult:
    assert spec.header is not None  # guaranteed by SignatureSpec.__post_init__
    value = _header(headers, spec.header.lower())
    if value is None:
        raise SignatureError("missing_header")
    if spec.prefix:
        if not value.startswith(spec.prefix):
            raise SignatureError("bad_format")
        value = value[len(spec.prefix):]
    raw = _unhex(value) if spec.encoding == "hex" else _unb64(value)
    if raw is None:
        raise SignatureError("bad_format")
    _check(keys, body, [raw], spec.algorithm)
    return VerifyResult()


def verify(spec: SignatureSpec, secrets: Sequence[str], headers: Mapping[str, str], body: bytes,
           *, now: float | None = None) -> VerifyResult:
    """Check that ``body`` (the exact bytes received) was signed with one of ``secrets`` under
    ``spec``. ``headers`` are keyed by lower-case name. Raises :class:`SignatureError` on any
    failure — never another exception for anything a sender controls."""
    keys = _keys(spec.scheme, secrets)
    if not isinstance(body, bytes):
        body = bytes(body)
    t = time.time() if now is None else now
    scheme = spec.scheme
    if scheme == "standard":
        return _standard(spec, keys, headers, body, t)
    if scheme == "stripe":
        return _stripe(spec, keys, headers, body, t)
    if scheme == "slack":
        return _slack(spec, keys, headers, body, t)
    if scheme == "github":
        return _github(keys, headers, body)
    if scheme == "shopify":
        return _base64_body_mac(keys, headers, body, "x-shopify-hmac-sha256")
    if scheme == "woocommerce":
        return _base64_body_mac(keys, headers, body, "x-wc-webhook-signature", woocommerce=True)
    return _generic(spec, keys, headers, body)


# --- signing (hookbay's own outbound deliveries) -------------------------------------------------


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for a Standard Webhooks delivery, so that
    hookbay's forwards verify with any Standard Webhooks library."""
    sig = _mac(_standard_key(secret), f"{msg_id}.{int(timestamp)}.".encode() + body)
    return "v1," + base64.b64encode(sig).decode("ascii")


def generate_secret(scheme: str) -> str:
    """A fresh secret in the shape ``scheme`` expects: ``whsec_`` + base64 of 24 random bytes for
    Standard Webhooks (what its libraries decode), else 32 random bytes as URL-safe base64 text."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    if scheme == "standard":
        return _STANDARD_PREFIX + base64.b64encode(_random.token_bytes(24)).decode("ascii")
    return _random.token_urlsafe(32)
