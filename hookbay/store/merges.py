"""The merge trail (``profile_merges``): which profile a merged-away id lives under now, and what
was merged into a profile. Profiles, orders and erasure all follow it."""

from __future__ import annotations

import sqlalchemy as sa

from hookbay.store import schema

PM = schema.profile_merges

MAX_MERGE_HOPS = 64


def resolve_profile_id(conn: sa.Connection, profile_id: str) -> str:
    """The id a profile lives under now: itself, or the survivor its merges lead to."""
    for _ in range(MAX_MERGE_HOPS):
        nxt = conn.execute(sa.select(PM.c.survivor_id).where(PM.c.merged_id == profile_id)).scalar()
        if nxt is None:
            return profile_id
        profile_id = nxt
    return profile_id


def merged_from(conn: sa.Connection, profile_id: str) -> list[str]:
    """Every id merged (directly or through other merges) into this profile, oldest merge first."""
    out: list[tuple[int, str]] = []
    frontier = [profile_id]
    while frontier and len(out) < 10_000:
        rows = conn.execute(sa.select(PM.c.merged_id, PM.c.merged_at).where(PM.c.survivor_id.in_(frontier))).all()
        frontier = [r[0] for r in rows]
        out.extend((r[1], r[0]) for r in rows)
    return [m for _, m in sorted(out)]


def forget_merges(conn: sa.Connection, profile_id: str) -> int:
    """Erasure: drop the merge trail that leads to an erased profile."""
    ids = merged_from(conn, profile_id)
    if not ids:
        return 0
    return conn.execute(PM.delete().where(PM.c.merged_id.in_(ids))).rowcount
