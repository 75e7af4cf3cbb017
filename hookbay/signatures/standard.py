"""Standard Webhooks (and Svix): ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature:
v1,<base64>`` over ``id.timestamp.body``, with a ``whsec_`` base64 secret. hookbay signs its own
forwards this way too (:func:`sign_standard`)."""

from __future__ import annotations

import base64
import binascii
import secrets as _random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hookbay.signatures.base import (
    PRINTABLE_ASCII,
    Scheme,
    SignatureError,
    VerifyResult,
    header,
    mac,
    timestamp,
    timestamped_mac,
    unb64,
)

if TYPE_CHECKING:
    from hookbay.signatures import SignatureSpec

PREFIX = "whsec_"


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, derived exactly as the ``standardwebhooks``
    library does: strip ``whsec_`` if present, then base64-decode (padding added, lenient), so a
    secret works identically here and in every other implementation."""
    s = secret[len(PREFIX):] if secret.startswith(PREFIX) else secret
    try:
        key = base64.b64decode(s + "==")
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret must be base64 (optionally prefixed 'whsec_')") from None
    if not key:
        raise ValueError("a Standard Webhooks secret may not be empty")
    return key


def new_secret() -> str:
    """``whsec_`` + base64 of 24 random bytes: what Standard Webhooks libraries decode."""
    return PREFIX + base64.b64encode(_random.token_bytes(24)).decode("ascii")


def verify(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
           now: float) -> VerifyResult:
    msg_id = header(headers, "webhook-id", "svix-id")
    ts_text = header(headers, "webhook-timestamp", "svix-timestamp")
    sig_text = header(headers, "webhook-signature", "svix-signature")
    if msg_id is None or ts_text is None or sig_text is None:
        raise SignatureError("missing_header")
    # The id is part of the signed content: only printable ASCII has one unambiguous byte form.
    if not PRINTABLE_ASCII.fullmatch(msg_id):
        raise SignatureError("bad_format")
    ts = timestamp(ts_text)
    given = []
    for entry in sig_text.split():
        version, _, value = entry.partition(",")
        if version != "v1":  # v1a (asymmetric) and future versions are not ours to check
            continue
        raw = unb64(value)
        if raw is not None:
            given.append(raw)
    return timestamped_mac(keys, ts, f"{msg_id}.{ts}.".encode(), body, given, now, spec.tolerance_s, event_id=msg_id)


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for a Standard Webhooks delivery, so that
    hookbay's forwards verify with any Standard Webhooks library."""
    sig = mac(standard_key(secret), f"{msg_id}.{int(timestamp)}.".encode() + body)
    return "v1," + base64.b64encode(sig).decode("ascii")


SCHEME = Scheme("standard", verify, key=standard_key, new_secret=new_secret, timestamped=True)
