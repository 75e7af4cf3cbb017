"""Slack: ``X-Slack-Signature: v0=<hex>`` over ``v0:<X-Slack-Request-Timestamp>:body``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from hookbay.signatures.base import (
    Scheme,
    SignatureError,
    VerifyResult,
    header,
    timestamp,
    timestamped_mac,
    unhex,
)

if TYPE_CHECKING:
    from hookbay.signatures import SignatureSpec


def verify(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
           now: float) -> VerifyResult:
    sig = header(headers, "x-slack-signature")
    ts_text = header(headers, "x-slack-request-timestamp")
    if sig is None or ts_text is None:
        raise SignatureError("missing_header")
    ts = timestamp(ts_text)
    version, eq, value = sig.partition("=")
    raw = unhex(value) if eq and version == "v0" else None
    # Slack's base string uses the timestamp header exactly as sent.
    return timestamped_mac(keys, ts, f"v0:{ts_text}:".encode(), body, [raw] if raw is not None else [],
                           now, spec.tolerance_s)


SCHEME = Scheme("slack", verify, timestamped=True)
