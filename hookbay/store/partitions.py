"""PostgreSQL: the request log range-partitioned by ``received_at`` (SPEC section 9).

Only ``requests`` is partitioned: it is what grows with traffic and what retention ages out.
Records and profiles outlive raw requests (SPEC section 7), jobs are deleted once processed, and
deliveries age by their own time, so none of them would be dropped with a day of requests.

PostgreSQL requires the partition key in every unique index, so the partitioned layout's primary
key is ``(id, received_at)`` (ids are random past their time prefix: still unique) and the
idempotency index ``(source_id, idempotency_key)`` is not unique there; the writer serialises
keyed inserts with an advisory lock per key instead (``Writer._lock_keys``). No foreign key
points at ``requests``. Partitions are named after the first day they hold
(``requests_p20261129``); ``requests_default`` takes anything outside them, so an insert is never
refused for want of a partition. SQLite keeps the one unpartitioned table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from hookbay.store import schema
from hookbay.store.search import PG_EXPR, PG_TXID, pg_install_text_index

Interval = Literal["day", "week", "month"]
PARENT = "requests"
DEFAULT = "requests_default"
NEW = "requests_partitioned"  # built by `hookbay partitions migrate` beside the old table
CURSOR_META = "partitions_migrate_cursor"
MIRROR_FN = "hookbay_requests_mirror"
_LOCK = 0x68627074  # "hbpt": one process creates or drops partitions at a time
_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")
US = 1_000_000


@dataclass(frozen=True)
class Partition:
    name: str
    lo: int | None  # µs, inclusive; None for the default partition
    hi: int | None  # µs, exclusive


def interval_start(us: int, interval: Interval) -> datetime:
    d = datetime.fromtimestamp(us / US, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        d -= timedelta(days=d.weekday())
    elif interval == "month":
        d = d.replace(day=1)
    return d


def next_start(d: datetime, interval: Interval) -> datetime:
    if interval == "day":
        return d + timedelta(days=1)
    if interval == "week":
        return d + timedelta(days=7)
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def to_us(d: datetime) -> int:
    return int(d.timestamp()) * US


def wanted_ranges(now: int, interval: Interval, ahead: int, oldest: int | None = None) -> list[tuple[int, int]]:
    """The current interval and ``ahead`` more (from ``oldest``'s interval when given)."""
    start = interval_start(oldest if oldest is not None and oldest < now else now, interval)
    last = interval_start(now, interval)
    for _ in range(ahead):
        last = next_start(last, interval)
    out = []
    while start <= last:
        nxt = next_start(start, interval)
        out.append((to_us(start), to_us(nxt)))
        start = nxt
    return out


def is_partitioned(conn: sa.Connection, table: str = PARENT) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    return conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"),
                        {"t": table}).scalar() == "p"


def table_exists(conn: sa.Connection, table: str) -> bool:
    return conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar() is True


def partitions(conn: sa.Connection, parent: str = PARENT) -> list[Partition]:
    """The partitions of ``parent`` in time order, the default one last."""
    rows = conn.execute(sa.text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:p)"), {"p": parent}).all()
    out = []
    for name, bound in rows:
        m = _BOUND.search(bound or "")
        out.append(Partition(name, int(m.group(1)), int(m.group(2))) if m else Partition(name, None, None))
    return sorted(out, key=lambda p: (p.lo is None, p.lo or 0))


def partition_stats(conn: sa.Connection, parent: str = PARENT) -> list[dict[str, int | str | None]]:
    """Each partition with its exact row count and on-disk size (table, indexes and TOAST)."""
    out: list[dict[str, int | str | None]] = []
    for p in partitions(conn, parent):
        n = conn.execute(sa.text(f'SELECT count(*) FROM "{p.name}"')).scalar() or 0
        size = conn.execute(sa.text("SELECT pg_total_relation_size(to_regclass(:t))"), {"t": p.name}).scalar()
        out.append({"name": p.name, "from_us": p.lo, "to_us": p.hi, "rows": int(n), "bytes": int(size or 0)})
    return out


def _lock(conn: sa.Connection, lock_timeout_ms: int) -> None:
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
    conn.execute(sa.text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))


def ensure(conn: sa.Connection, interval: Interval, ahead: int, now: int, *, parent: str = PARENT,
           oldest: int | None = None, lock_timeout_ms: int = 5000) -> list[str]:
    """Create the default partition and the partitions for ``wanted_ranges`` not yet covered
    (an interval changed since earlier partitions were made only fills the gaps); returns the new
    partitions' names. Rows the default partition holds for a new range move into it in the same
    transaction, so none is lost or doubled."""
    _lock(conn, lock_timeout_ms)
    have = partitions(conn, parent)
    made: list[str] = []
    if not any(p.lo is None for p in have):
        conn.execute(sa.text(f"CREATE TABLE {DEFAULT} PARTITION OF {parent} DEFAULT"))
        made.append(DEFAULT)
    taken = sorted((p.lo, p.hi) for p in have if p.lo is not None and p.hi is not None)
    for lo, hi in wanted_ranges(now, interval, ahead, oldest):
        for glo, ghi in _gaps(lo, hi, taken):
            name = "requests_p" + datetime.fromtimestamp(glo / US, UTC).strftime("%Y%m%d")
            _create(conn, parent, name, glo, ghi)
            taken = sorted([*taken, (glo, ghi)])
            made.append(name)
    return made


def _gaps(lo: int, hi: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, at = [], lo
    for tlo, thi in taken:
        if thi <= at or tlo >= hi:
            continue
        if tlo > at:
            out.append((at, tlo))
        at = max(at, thi)
    if at < hi:
        out.append((at, hi))
    return out


def _create(conn: sa.Connection, parent: str, name: str, lo: int, hi: int) -> None:
    """A new partition is made as a table of its own, then attached: ATTACH takes a lock that lets
    ingest carry on (CREATE TABLE ... PARTITION OF would lock the whole request log against it)."""
    conn.execute(sa.text(f"CREATE TABLE {name} (LIKE {parent} INCLUDING DEFAULTS)"))
    moved = conn.execute(sa.text(f"WITH moved AS (DELETE FROM {DEFAULT} WHERE received_at >= :lo AND received_at < :hi "
                                 f"RETURNING *) INSERT INTO {name} SELECT * FROM moved"), {"lo": lo, "hi": hi}).rowcount
    if moved and parent == PARENT:  # the delete's trigger took their free-text entries (search.pg_install_text_index)
        conn.execute(sa.text(f"INSERT INTO request_text (id, received_at, doc) SELECT id, received_at, {PG_EXPR} "
                             f"FROM {name} WHERE text_txid < (SELECT upto FROM request_text_state) "
                             "ON CONFLICT (id) DO NOTHING"))
    conn.execute(sa.text(f"ALTER TABLE {parent} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"))


# --- the partitioned table's DDL --------------------------------------------------------------


def create_partitioned(conn: sa.Connection, name: str, suffix: str = "") -> None:
    """``requests`` as a partitioned table called ``name``: the schema's columns, the primary key
    with ``received_at``, the schema's indexes (the idempotency one not unique) and the trigram
    index, each index name followed by ``suffix`` (names are global to the database)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    cols = [str(sa.schema.CreateColumn(c).compile(dialect=dialect)) for c in schema.requests.c]
    conn.execute(sa.text(f"CREATE TABLE {name} ({', '.join(cols)}, CONSTRAINT pk_{name} PRIMARY KEY "
                         "(id, received_at)) PARTITION BY RANGE (received_at)"))
    for ix in schema.requests.indexes:
        ixcols = ", ".join(c.name for c in ix.columns)
        conn.execute(sa.text(f"CREATE INDEX {ix.name}{suffix} ON {name} ({ixcols})"))
    # the free-text index's mark (hookbay.store.search): the inserting transaction of each row
    conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN text_txid bigint DEFAULT {PG_TXID}"))
    conn.execute(sa.text(f"CREATE INDEX ix_requests_text_txid{suffix} ON {name} (text_txid)"))


def index_names() -> list[str]:
    return [str(ix.name) for ix in schema.requests.indexes] + ["ix_requests_text_txid"]


# --- retention -------------------------------------------------------------------------------


def busy(conn: sa.Connection, name: str) -> bool:
    """Whether a partition holds a request not yet processed: pending, with a job, or queued for
    a relay agent. Such a partition is never dropped."""
    return bool(conn.execute(sa.text(
        f"SELECT EXISTS (SELECT 1 FROM {name} WHERE state = 'pending') "
        f"OR EXISTS (SELECT 1 FROM jobs j JOIN {name} r ON r.id = j.request_id) "
        f"OR EXISTS (SELECT 1 FROM relay_messages m JOIN {name} r ON r.id = m.request_id "
        "WHERE m.state <> 'acked')")).scalar())


def newest_by_source(conn: sa.Connection, name: str) -> dict[str | None, tuple[int, int]]:
    """Per source in a partition: its newest request's time and its number of requests."""
    return {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(sa.text(
        f"SELECT source_id, max(received_at), count(*) FROM {name} GROUP BY source_id"))}


def drop_if_idle(conn: sa.Connection, name: str, lock_timeout_ms: int = 5000) -> bool | None:
    """Drop one partition unless, checked again under the lock, it holds unprocessed work
    (False then; None if another process dropped it first). The parent is locked first, as every statement on
    ``requests`` does, so this waits for them rather than deadlocking with one; the lock is held
    only for the quick checks and the DROP."""
    _lock(conn, lock_timeout_ms)
    if not table_exists(conn, name):
        return None
    conn.execute(sa.text(f"LOCK TABLE {PARENT} IN ACCESS EXCLUSIVE MODE"))
    if busy(conn, name):
        return False
    conn.execute(sa.text(f"DELETE FROM request_text WHERE id IN (SELECT id FROM {name})"))
    conn.execute(sa.text(f"DROP TABLE {name}"))
    return True


# --- migrating an unpartitioned database -----------------------------------------------------


_COLS = [c.name for c in schema.requests.c] + ["text_txid"]  # with the free-text mark: no row indexed twice
_MIRROR = f"""
CREATE OR REPLACE FUNCTION {MIRROR_FN}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM {NEW} WHERE id = OLD.id AND received_at = OLD.received_at;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  INSERT INTO {NEW} ({{cols}}) VALUES ({{new_cols}}) ON CONFLICT DO NOTHING;
  RETURN NEW;
END $$"""


def migrate_prepare(conn: sa.Connection, interval: Interval, ahead: int, now: int) -> bool:
    """First step of `hookbay partitions migrate` (one transaction; a no-op when already done):
    the partitioned copy with partitions for the old rows' span, and a trigger on the old table
    that mirrors every insert, update and delete into it from now on. Creating the trigger waits
    for transactions writing the old table, so every row committed after it is mirrored and every
    row committed before it is seen by the batch copy. Returns False if there is nothing to do."""
    if is_partitioned(conn):
        return False
    if not table_exists(conn, NEW):
        create_partitioned(conn, NEW, suffix="_p")
        oldest = conn.execute(sa.text("SELECT min(received_at) FROM requests")).scalar()
        ensure(conn, interval, ahead, now, parent=NEW, oldest=int(oldest) if oldest is not None else None)
        # by name: the old table's columns are in the order the migrations added them
        cols = ", ".join(_COLS)
        conn.execute(sa.text(_MIRROR.format(cols=cols, new_cols=", ".join(f"NEW.{c}" for c in _COLS))))
        conn.execute(sa.text(f"CREATE TRIGGER {MIRROR_FN} AFTER INSERT OR UPDATE OR DELETE ON requests "
                             f"FOR EACH ROW EXECUTE FUNCTION {MIRROR_FN}()"))
        conn.execute(sa.text("DELETE FROM meta WHERE key = :k"), {"k": CURSOR_META})
        conn.execute(sa.text("INSERT INTO meta (key, value) VALUES (:k, '')"), {"k": CURSOR_META})
    return True


def migrate_copy_batch(conn: sa.Connection, batch: int) -> tuple[int, int]:
    """Copy the next ``batch`` old rows (by id, after the cursor kept in ``meta``) and advance
    the cursor in the same transaction: killed at any point, a rerun resumes where the last
    commit left off. The rows are read ``FOR SHARE``, so an update or delete of one waits for the
    copy and its mirror trigger then sees the copied row; rows already mirrored are skipped.
    Returns (rows read, rows inserted)."""
    cursor = conn.execute(sa.text("SELECT value FROM meta WHERE key = :k FOR UPDATE"), {"k": CURSOR_META}).scalar()
    row = conn.execute(sa.text(
        f"WITH batch AS (SELECT * FROM requests WHERE id > :c ORDER BY id LIMIT :n FOR SHARE), "
        f"ins AS (INSERT INTO {NEW} ({', '.join(_COLS)}) SELECT {', '.join(_COLS)} FROM batch "
        "ON CONFLICT DO NOTHING RETURNING 1) "
        "SELECT (SELECT max(id) FROM batch), (SELECT count(*) FROM batch), (SELECT count(*) FROM ins)"),
        {"c": cursor or "", "n": batch}).one()
    if row[0] is not None:
        conn.execute(sa.text("UPDATE meta SET value = :v WHERE key = :k"), {"v": row[0], "k": CURSOR_META})
    return int(row[1]), int(row[2])


def migrate_swap(conn: sa.Connection, lock_timeout_ms: int) -> int:
    """Last step, one transaction: with the old table locked, copy whatever is left past the
    cursor, check both tables hold the same number of rows, drop the old table and give the new
    one its name, primary key and index names. Returns the row count."""
    conn.execute(sa.text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
    conn.execute(sa.text("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE"))
    while migrate_copy_batch(conn, 50_000)[0]:
        pass
    old = int(conn.execute(sa.text("SELECT count(*) FROM requests")).scalar() or 0)
    new = int(conn.execute(sa.text(f"SELECT count(*) FROM {NEW}")).scalar() or 0)
    if old != new:
        raise MigrateMismatch(old, new)
    conn.execute(sa.text("DROP TABLE requests"))
    conn.execute(sa.text(f"DROP FUNCTION {MIRROR_FN}()"))
    conn.execute(sa.text(f"ALTER TABLE {NEW} RENAME TO requests"))
    conn.execute(sa.text(f"ALTER TABLE requests RENAME CONSTRAINT pk_{NEW} TO pk_requests"))
    for ix in index_names():
        conn.execute(sa.text(f"ALTER INDEX {ix}_p RENAME TO {ix}"))
    pg_install_text_index(conn)  # the old table's trigger went with it
    conn.execute(sa.text("DELETE FROM meta WHERE key = :k"), {"k": CURSOR_META})
    return new


def migrate_rewind(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE meta SET value = '' WHERE key = :k"), {"k": CURSOR_META})


def migrate_progress(conn: sa.Connection) -> dict[str, int | str | None]:
    cursor = conn.execute(sa.text("SELECT value FROM meta WHERE key = :k"), {"k": CURSOR_META}).scalar()
    copying = table_exists(conn, NEW)
    return {"partitioned": is_partitioned(conn), "copying": int(copying), "cursor": cursor}


class MigrateMismatch(Exception):
    def __init__(self, old: int, new: int) -> None:
        super().__init__(f"the old table has {old} rows and the partitioned copy {new}")
        self.old, self.new = old, new
