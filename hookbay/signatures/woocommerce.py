"""WooCommerce: ``X-WC-Webhook-Signature: <base64>``, HMAC-SHA256 of the body; plus the unsigned
``webhook_id=N`` ping WooCommerce posts when a webhook is saved (``WC_Webhook::deliver_ping``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hookbay.signatures.base import Scheme, VerifyResult, base64_body_mac, header

if TYPE_CHECKING:
    from hookbay.signatures import SignatureSpec

_HEADER = "x-wc-webhook-signature"
_PING = re.compile(rb"webhook_id=[0-9]{1,20}")


def verify(spec: SignatureSpec, keys: list[bytes], headers: Mapping[str, str], body: bytes,
           now: float) -> VerifyResult:
    # The save-time ping carries no signature; accept exactly that body and nothing else, and flag
    # it so the caller never treats it as an event.
    if header(headers, _HEADER) is None and _PING.fullmatch(body):
        return VerifyResult(ping=True)
    return base64_body_mac(keys, headers, body, _HEADER)


SCHEME = Scheme("woocommerce", verify)
