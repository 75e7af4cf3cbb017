"""Shopify: ``X-Shopify-Hmac-Sha256: <base64>``, HMAC-SHA256 of the body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from hookbay.signatures.base import Scheme, VerifyResult, base64_body_mac

if TYPE_CHECKING:
    from hookbay.signatures import SignatureSpec


def verify(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
           now: float) -> VerifyResult:
    return base64_body_mac(keys, headers, body, "x-shopify-hmac-sha256")


SCHEME = Scheme("shopify", verify)
