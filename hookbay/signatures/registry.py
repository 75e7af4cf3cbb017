"""Every signature scheme, one line each. A new scheme is a module defining ``SCHEME`` plus its
line here; the config model, CLI help and console choices read this table."""

from __future__ import annotations

from hookbay.signatures import github, hmac, shopify, slack, standard, stripe, woocommerce
from hookbay.signatures.base import Scheme

REGISTRY: dict[str, Scheme] = {s.name: s for s in (
    standard.SCHEME,
    github.SCHEME,
    stripe.SCHEME,
    shopify.SCHEME,
    woocommerce.SCHEME,
    slack.SCHEME,
    hmac.SCHEME,
)}
SCHEMES = tuple(REGISTRY)
