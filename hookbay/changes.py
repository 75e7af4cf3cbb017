"""How a configuration change is applied and judged: JSON Merge Patch, and which changes weaken a
source's checks.

Pure functions. A partial update must change only what it names (a PATCH of ``{"config":
{"rate": 5}}`` once replaced the whole config and silently dropped a signature check), and a change
that removes or loosens a check must be explicit and is recorded.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hookbay.models import SourceConfig


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: keys present replace, ``null`` removes, absent keys stay; a non-object patch
    replaces the target whole (lists included). Eight lines: no library needed."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _covered(net: str, by: list[str]) -> bool:
    n = ipaddress.ip_network(net, strict=False)
    for other in by:
        o = ipaddress.ip_network(other, strict=False)
        if n.version == o.version and n.subnet_of(o):  # type: ignore[arg-type]
            return True
    return False


def weakenings(old: SourceConfig, new: SourceConfig) -> dict[str, str]:
    """The checks ``new`` removes or loosens compared with ``old``: config field -> what happens."""
    out: dict[str, str] = {}
    if old.signature is not None and new.signature != old.signature:
        out["signature"] = ("signature check removed" if new.signature is None
                            else f"signature check changed ({old.signature.scheme} -> {new.signature.scheme})")
    if old.allow_ips and (not new.allow_ips or not all(_covered(n, old.allow_ips) for n in new.allow_ips)):
        out["allow_ips"] = "IP allowlist removed" if not new.allow_ips else "IP allowlist widened"
    gone = [h for h, v in old.required_headers.items() if new.required_headers.get(h) != v]
    if gone:
        out["required_headers"] = "required header removed or changed: " + ", ".join(sorted(gone))
    added = [m for m in new.methods if m not in old.methods]
    if added:
        out["methods"] = "methods widened: " + ", ".join(added)
    if new.allow_private_destinations and not old.allow_private_destinations:
        out["allow_private_destinations"] = "outbound guard lifted"
    out.update(_edge_weakenings(old, new))
    return out


def _edge_weakenings(old: SourceConfig, new: SourceConfig) -> dict[str, str]:
    """Browser-sender checks (issue #15). An origin list refuses every other origin with 403; without
    one any page may post (it just cannot read the answer), so dropping or widening it loosens a check.
    The honeypot and the per-address limit are abuse checks on public forms."""
    out: dict[str, str] = {}
    if old.allowed_origins and "*" not in old.allowed_origins:
        widened = [o for o in new.allowed_origins if o not in old.allowed_origins]
        if not new.allowed_origins:
            out["allowed_origins"] = "origin check removed (any site may post)"
        elif widened:
            out["allowed_origins"] = "origins widened: " + ", ".join(widened)
    if old.honeypot_field and new.honeypot_field != old.honeypot_field:
        out["honeypot_field"] = "honeypot removed" if not new.honeypot_field else "honeypot field changed"
    if old.rate_per_ip is not None:
        if new.rate_per_ip is None or new.rate_per_ip > old.rate_per_ip:
            out["rate_per_ip"] = "per-address limit removed" if new.rate_per_ip is None else "per-address limit raised"
        elif (new.burst_per_ip or 0) > (old.burst_per_ip or max(1.0, old.rate_per_ip)):
            out["burst_per_ip"] = "per-address burst raised"
    unsigned = ("meta", "dropbox", "msgraph")
    if (new.signature is not None and new.handshake is not None and new.handshake.type in unsigned
            and (old.handshake is None or old.handshake.type != new.handshake.type)):
        out["handshake"] = f"{new.handshake.type} verification requests are answered without a signature"
    return out


SECRET_KEYS = frozenset({"secret", "api_key", "password", "token", "verify_token"})
# Header values (a required shared header, a forward's Authorization) are credentials as often as not:
# diffs show the header names only.
HEADER_MAPS = frozenset({"headers", "required_headers"})


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("[set]" if k in SECRET_KEYS and v
                    else {h: "[set]" for h in v} if k in HEADER_MAPS and isinstance(v, dict)
                    else _masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per changed top-level config field, secrets inside shown as ``[set]``."""
    import orjson

    def show(key: str, v: Any) -> str:
        return orjson.dumps(_masked({key: v})[key], option=orjson.OPT_SORT_KEYS).decode()

    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            a_shown, b_shown = show(key, a), show(key, b)
            if a_shown == b_shown:  # only a secret differs
                lines.append(f"config.{key}: [secret changed]")
            else:
                lines.append(f"config.{key}: {a_shown} -> {b_shown}")
    return lines
