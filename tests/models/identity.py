"""A reference model of hookbay's identity rules (SPEC section 4), written again from the spec in
plain dicts, to drive the real worker and store against (tests/integration/test_identity_stateful.py).

Deliberately independent of ``hookbay.profiles``: a bug there must not be copied here.

- A contact's keys: its email in lower case, its phone and mobile (one kind, ``phone``).
- No key known: a new profile. Keys of one profile: that profile, plus the new keys. Keys of two
  or more: they merge into the oldest, which takes the others' keys, fields, ledger and records.
- Scalar fields: the value with the latest event time wins (a later-or-equal contact replaces it;
  in a merge the survivor keeps a tie); set fields are unions. Each remembers its setter.
- Consent: a ledger of events; one per (request, profile, channel), the first wins; the state of a
  channel is its latest event by (event time, ledger order).
- Erasure removes a profile, its keys, its ledger and its merge trail.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

SETS = {"activities", "interests", "newsletters", "list_ids"}


@dataclass
class Event:
    seq: int
    channel: str
    granted: bool
    at: int
    request_id: str
    source_id: str


@dataclass
class Profile:
    id: int
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger: list[Event] = field(default_factory=list)
    requests: set[str] = field(default_factory=set)


class IdentityModel:
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], int] = {}
        self.profiles: dict[int, Profile] = {}
        self.merged: dict[int, int] = {}  # merged-away id -> the profile it went into
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)

    @staticmethod
    def keys_of(contact: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        if contact.get("email"):
            out.append(("email", contact["email"].lower()))
        for f in ("phone", "mobile"):
            if contact.get(f) and ("phone", contact[f]) not in out:
                out.append(("phone", contact[f]))
        return out

    def survivor_of(self, pid: int) -> int | None:
        while pid in self.merged:
            pid = self.merged[pid]
        return pid if pid in self.profiles else None

    def apply(self, contact: dict[str, Any], consents: list[dict[str, Any]], at: int, request_id: str,
              source_id: str) -> int | None:
        keys = self.keys_of(contact)
        if not keys:
            return None
        hits: list[int] = []
        for k in keys:
            if k in self.keys and self.keys[k] not in hits:
                hits.append(self.keys[k])
        if not hits:
            p = Profile(next(self._ids))
            self.profiles[p.id] = p
        else:
            p = self.profiles[min(hits)]
            for other in hits:
                if other != p.id:
                    self._merge(p, self.profiles.pop(other))
        for k in keys:
            self.keys[k] = p.id
        self._set_fields(p, contact, at, request_id, source_id)
        p.requests.add(request_id)
        for c in consents:
            if not any(e.request_id == request_id and e.channel == c["channel"] for e in p.ledger):
                p.ledger.append(Event(next(self._seq), c["channel"], bool(c["granted"]), at, request_id, source_id))
        return p.id

    @staticmethod
    def _set_fields(p: Profile, contact: dict[str, Any], at: int, request_id: str, source_id: str) -> None:
        for name, value in contact.items():
            if value is None or value == "" or value == [] or value == {}:
                continue
            cur = p.fields.get(name)
            mine = {"value": value, "at": at, "request_id": request_id, "source_id": source_id}
            if name in SETS and isinstance(value, list):
                if cur is None:
                    p.fields[name] = {**mine, "value": list(value)}
                else:
                    new = [v for v in value if v not in cur["value"]]
                    if new:
                        p.fields[name] = {**mine, "value": cur["value"] + new, "at": max(at, cur["at"])}
            elif cur is None or (at >= cur["at"] and (cur["value"], cur["request_id"]) != (value, request_id)):
                p.fields[name] = mine

    def _merge(self, into: Profile, other: Profile) -> None:
        for name, theirs in other.fields.items():
            ours = into.fields.get(name)
            if ours is None:
                into.fields[name] = dict(theirs)
            elif name in SETS and isinstance(ours["value"], list):
                new = [v for v in theirs["value"] if v not in ours["value"]]
                if new:
                    into.fields[name] = {**theirs, "value": ours["value"] + new, "at": max(ours["at"], theirs["at"])}
            elif theirs["at"] > ours["at"]:
                into.fields[name] = dict(theirs)
        ledger = sorted(into.ledger + other.ledger, key=lambda e: e.seq)
        seen: set[tuple[str, str]] = set()
        into.ledger = []
        for e in ledger:
            if (e.request_id, e.channel) not in seen:
                seen.add((e.request_id, e.channel))
                into.ledger.append(e)
        into.requests |= other.requests
        for k, pid in self.keys.items():
            if pid == other.id:
                self.keys[k] = into.id
        self.merged[other.id] = into.id

    def erase(self, pid: int) -> None:
        self.profiles.pop(pid)
        self.keys = {k: p for k, p in self.keys.items() if p != pid}
        trail = {pid}
        while True:
            more = {m for m, s in self.merged.items() if s in trail and m not in trail}
            if not more:
                break
            trail |= more
        self.merged = {m: s for m, s in self.merged.items() if m not in trail}

    @staticmethod
    def consent_state(p: Profile) -> dict[str, bool]:
        state: dict[str, bool] = {}
        for e in sorted(p.ledger, key=lambda e: (e.at, e.seq)):
            state[e.channel] = e.granted
        return state

    def snapshot(self) -> dict[frozenset[tuple[str, str]], dict[str, Any]]:
        """Each profile keyed by its set of keys (ids differ between the model and the system)."""
        by_profile: dict[int, set[tuple[str, str]]] = {}
        for k, pid in self.keys.items():
            by_profile.setdefault(pid, set()).add(k)
        return {
            frozenset(keys): {
                "fields": canonical_fields(self.profiles[pid].fields),
                "ledger": sorted((e.channel, e.granted, e.at, e.request_id, e.source_id)
                                 for e in self.profiles[pid].ledger),
                "consent": self.consent_state(self.profiles[pid]),
                "requests": self.profiles[pid].requests,
            }
            for pid, keys in by_profile.items()
        }


def canonical_fields(fields: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Fields as comparable tuples; a set field's values in sorted order (a union has no order)."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, f in fields.items():
        value = sorted(map(str, f["value"])) if name in SETS and isinstance(f["value"], list) else f["value"]
        out[name] = (value, f["at"], f["request_id"], f.get("source_id"))
    return out
