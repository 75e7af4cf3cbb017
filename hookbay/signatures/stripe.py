"""Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>`` over ``t.body``; only too-old is refused."""

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
    value = header(headers, "stripe-signature")
    if value is None:
        raise SignatureError("missing_header")
    ts_texts: list[str] = []
    v1: list[str] = []
    for item in value.split(","):
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
    ts = timestamp(ts_texts[0])
    given = [raw for v in v1 if (raw := unhex(v)) is not None]
    # Like stripe.WebhookSignature.verify_header: only too-old is refused (replays); Stripe never
    # dates a signature ahead, so a future one is our clock lagging.
    return timestamped_mac(keys, ts, f"{ts}.".encode(), body, given, now, spec.tolerance_s, past_only=True)


SCHEME = Scheme("stripe", verify, timestamped=True)
