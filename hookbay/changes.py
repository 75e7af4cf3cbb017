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
    return out


SECRET_KEYS = frozenset({"secret", "api_key", "password", "token"})
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
