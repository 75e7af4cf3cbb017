"""GitHub: ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from hookbay.signatures.base import Scheme, SignatureError, VerifyResult, check, header, unhex

if TYPE_CHECKING:
    from hookbay.signatures import SignatureSpec


def verify(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
           now: float) -> VerifyResult:
    sig = header(headers, "x-hub-signature-256")
    if sig is None:
        raise SignatureError("missing_header")
    raw = unhex(sig[len("sha256="):]) if sig.startswith("sha256=") else None
    if raw is None:
        raise SignatureError("bad_format")
    check(keys, body, [raw])
    return VerifyResult()


SCHEME = Scheme("github", verify)
