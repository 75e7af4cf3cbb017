"""Verify webhook signatures the way each provider signs them, over the exact bytes received.

One module per scheme (``standard``, ``github``, ...), listed in :mod:`hookbay.signatures.registry`;
this module is the package's interface: the spec, :func:`verify` and the secret helpers.

Why it is built this way:

* Every digest is computed over the raw body bytes; nothing is parsed or re-encoded first, because
  a single changed byte (whitespace, key order, a re-encoded character) must fail.
* Every active secret is tried (two are active during a rotation) and every candidate signature is
  compared with :func:`hmac.compare_digest`, without stopping at the first match, so neither the
  timing nor the error tells a sender which secret came close.
* Failures raise :class:`SignatureError` with a short machine ``reason`` for the operator's log;
  the sender is only ever told "invalid signature".
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hookbay.signatures.base import (
    ALGORITHMS,
    ENCODINGS,
    PRINTABLE_ASCII,
    REASONS,
    Scheme,
    SignatureError,
    VerifyResult,
)
from hookbay.signatures.registry import REGISTRY, SCHEMES
from hookbay.signatures.standard import sign_standard

__all__ = ["ALGORITHMS", "ENCODINGS", "REASONS", "SCHEMES", "SignatureError", "SignatureSpec", "VerifyResult",
           "generate_secret", "sign_standard", "validate_secret", "verify"]


@dataclass(frozen=True)
class SignatureSpec:
    """How a source's requests are signed. ``header``/``algorithm``/``encoding``/``prefix`` only
    matter for configurable schemes (``hmac``; the others fix them); ``tolerance_s`` for the
    timestamped ones (standard, stripe, slack)."""

    scheme: str
    header: str | None = None
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    tolerance_s: int = 300

    def __post_init__(self) -> None:
        scheme = _scheme(self.scheme, expected=True)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; expected one of {', '.join(ENCODINGS)}")
        if isinstance(self.tolerance_s, bool) or not isinstance(self.tolerance_s, int) or self.tolerance_s < 1:
            raise ValueError("tolerance_s must be a positive number of seconds")
        if not isinstance(self.prefix, str) or (self.prefix and not PRINTABLE_ASCII.fullmatch(self.prefix)):
            raise ValueError("prefix must be printable ASCII without spaces")
        scheme.check_spec(self)


def _scheme(name: str, *, expected: bool = False) -> Scheme:
    scheme = REGISTRY.get(name) if isinstance(name, str) else None
    if scheme is None:
        raise ValueError(f"unknown signature scheme {name!r}"
                         + (f"; expected one of {', '.join(SCHEMES)}" if expected else ""))
    return scheme


def _key(scheme: Scheme, secret: str) -> bytes:
    if not isinstance(secret, str):
        raise ValueError("a signing secret must be text")
    return scheme.key(secret)


def validate_secret(scheme: str, secret: str) -> None:
    """Raise ValueError if ``secret`` cannot be used with ``scheme`` — call it when a secret is
    saved, so a typo is refused then rather than turning every delivery into a 401."""
    _key(_scheme(scheme), secret)


def _keys(scheme: Scheme, secrets: Sequence[str]) -> list[bytes]:
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


def verify(spec: SignatureSpec, secrets: Sequence[str], headers: Mapping[str, str], body: bytes,
           *, now: float | None = None) -> VerifyResult:
    """Check that ``body`` (the exact bytes received) was signed with one of ``secrets`` under
    ``spec``. ``headers`` are keyed by lower-case name. Raises :class:`SignatureError` on any
    failure — never another exception for anything a sender controls."""
    scheme = REGISTRY[spec.scheme]
    keys = _keys(scheme, secrets)
    if not isinstance(body, bytes):
        body = bytes(body)
    return scheme.verify(spec, keys, headers, body, time.time() if now is None else now)


def generate_secret(scheme: str) -> str:
    """A fresh secret in the shape ``scheme`` expects (e.g. ``whsec_…`` for Standard Webhooks)."""
    return _scheme(scheme).new_secret()
