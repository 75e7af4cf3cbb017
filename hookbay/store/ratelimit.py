"""Leasing tokens from a source's shared token bucket (PostgreSQL).

One statement reads the bucket under its row lock, refills it by the database's clock (so machines
with skewed clocks agree), takes up to the tokens asked for and writes it back: two processes
leasing at once are serialised by the row lock, and no token is handed out twice."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

_ENSURE = sa.text(
    "INSERT INTO rate_buckets (source_id, tokens, updated_at) "
    "VALUES (:sid, :burst, extract(epoch FROM clock_timestamp())) ON CONFLICT (source_id) DO NOTHING")

_LEASE = sa.text("""
WITH cur AS (
    SELECT LEAST(CAST(:burst AS float8),
                 b.tokens + GREATEST(0, extract(epoch FROM clock_timestamp()) - b.updated_at) * :rate) AS level,
           extract(epoch FROM clock_timestamp()) AS at
    FROM rate_buckets b WHERE b.source_id = :sid FOR UPDATE
)
UPDATE rate_buckets SET tokens = cur.level - LEAST(:want, floor(cur.level)), updated_at = cur.at
FROM cur WHERE rate_buckets.source_id = :sid
RETURNING CAST(LEAST(:want, floor(cur.level)) AS integer) AS granted, cur.level AS level
""")


@dataclass(frozen=True, slots=True)
class Lease:
    granted: int
    wait_s: float  # when nothing was granted: until the shared bucket holds a whole token


def lease_tokens(conn: sa.Connection, source_id: str, rate: float, burst: float, want: int) -> Lease:
    params = {"sid": source_id, "rate": float(rate), "burst": float(burst), "want": int(want)}
    row = conn.execute(_LEASE, params).one_or_none()
    if row is None:
        conn.execute(_ENSURE, params)
        row = conn.execute(_LEASE, params).one()
    conn.commit()
    granted = int(row.granted)
    left = float(row.level) - granted
    return Lease(granted, 0.0 if granted else max(0.0, (1 - left) / rate))
