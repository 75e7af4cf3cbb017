"""Generic HMAC of the body for providers without a scheme of their own: the spec names the
header, the algorithm (sha1, sha256, sha512), the encoding (hex, base64) and an optional prefix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hookbay.signatures.base import Scheme, SignatureError, VerifyResult, check, header, unb64, unhex

if TYPE_CHECKING:
    from hookbay.signatures import SignatureSpec

# RFC 9110 token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_spec(spec: SignatureSpec) -> None:
    if not spec.header:
        raise ValueError("scheme 'hmac' needs a header name")
    if not _TOKEN.fullmatch(spec.header):
        raise ValueError(f"{spec.header!r} is not a valid header name")


def verify(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
           now: float) -> VerifyResult:
    assert spec.header is not None  # guaranteed by check_spec
    value = header(headers, spec.header.lower())
    if value is None:
        raise SignatureError("missing_header")
    if spec.prefix:
        if not value.startswith(spec.prefix):
            raise SignatureError("bad_format")
        value = value[len(spec.prefix):]
    raw = unhex(value) if spec.encoding == "hex" else unb64(value)
    if raw is None:
        raise SignatureError("bad_format")
    check(keys, body, [raw], spec.algorithm)
    return VerifyResult()


SCHEME = Scheme("hmac", verify, check_spec=check_spec, configurable=True)
