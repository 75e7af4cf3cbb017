"""Free-text conditions over request bodies and headers, on the index migration 0010 builds.

Both dialects answer the same question: does the text occur, ignoring ASCII case, in the first
64 KiB of the plaintext body or in the headers (JSON text)? SQLite asks its FTS5 trigram table for
the rows holding trigrams of the text, then checks each; PostgreSQL a GIN trigram index on an
expression that must stay identical to the migration's. Text shorter than three characters has no
trigram, so rows are checked one by one, by the same rule.

On both dialects the index is filled by :class:`TextIndexer` after the ingest commit, never inside
it: on SQLite trigram indexing tripled the writer's CPU per row; on PostgreSQL a trigram index on
the request log itself cost the server 108 µs of its 156 µs per ingested request (and again on
every update of a row's state), two thirds of what kept PostgreSQL ingest at 0.43× SQLite's. A
search still sees every row, as the rows the indexer has not reached yet are checked one by one.

SQLite's mark is a rowid. PostgreSQL's is a transaction id: each request row records the id of
the transaction that inserted it (``text_txid``, a column default), and the indexer indexes the
rows of transactions older than the oldest one of its database still running, so a
transaction that commits late, or several processes committing out of order, never leave a row
behind the mark unindexed (the technique of PgQ's ticker). The index lives in ``request_text``
beside the log, kept in step by a trigger when a row's body, headers or key change or the row is
deleted; a dropped partition takes its rows' entries with it (:func:`hookbay.store.partitions.drop_if_idle`).

A page of results (:func:`find`) is looked for in two steps, each exact on its own part of the
order: first the newest :data:`WINDOW` rows that pass the other filters are checked one by one (a
common text fills the page there, without reading the index's long lists), then, only if the page
is not full, the index answers for the rows past that window, asked for the rarest few trigrams of
the text (a trigram such as ``com`` is in nearly every row: intersecting its list cost more than
checking the rows the rare ones leave).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog

log = structlog.get_logger("hookbay.store")

MIN_INDEXED = 3
WINDOW = 1000  # rows past the cursor checked one by one before the index is asked
GRAMS = 3  # trigrams the index is asked for (the rarest)
PROBE_CAP = 2000  # SQLite: a trigram's first rows read to estimate how many hold it
SAMPLE = 300  # PostgreSQL: trigram frequencies are estimated on about this many rows


def _pg_doc(row: str = "") -> tuple[str, str]:
    """The indexed text of a row (its body part, and the whole), over the columns of ``row``."""
    body = (f"(CASE WHEN {row}key_id IS NULL THEN coalesce(encode(substring({row}body from 1 for 65536), 'escape'),"
            " '') ELSE '' END)")
    return body, f"({body} || ' ' || {row}headers)"


PG_BODY, PG_EXPR = _pg_doc()
PG_TXID = "(pg_current_xact_id()::text::bigint)"
# The oldest transaction of this database still running (else the next one to start): every row
# of an older transaction is committed or gone. Transaction ids are global to the server, so the
# plain snapshot xmin would wait for a long transaction in another database too.
PG_SAFE_TXID = ("(WITH s AS (SELECT pg_current_snapshot() AS s) SELECT coalesce(min(x::text::bigint), "
                "(SELECT pg_snapshot_xmax(s)::text::bigint FROM s)) FROM s, pg_snapshot_xip(s.s) AS x "
                "WHERE x::xid IN (SELECT backend_xid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_xid IS NOT NULL))")
PG_TEXT_FN = "hookbay_request_text"


def pg_install_text_index(conn: sa.Connection, table: str = "requests") -> None:
    """PostgreSQL: the side index of ``table`` (idempotent; migration 0013 and a new partitioned
    table call it): the inserting transaction's id on every row, the trigram table, its mark, and
    the trigger that keeps indexed rows in step with changes and deletes."""
    conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS text_txid bigint"))
    conn.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN text_txid SET DEFAULT {PG_TXID}"))
    conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{table}_text_txid ON {table} (text_txid)"))
    conn.execute(sa.text("CREATE TABLE IF NOT EXISTS request_text (id varchar(40) PRIMARY KEY, "
                         "received_at bigint NOT NULL, doc text NOT NULL)"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_request_text_trgm ON request_text USING gin (doc gin_trgm_ops)"))
    conn.execute(sa.text("CREATE TABLE IF NOT EXISTS request_text_state (upto bigint NOT NULL)"))
    doc = _pg_doc("NEW.")[1]
    conn.execute(sa.text(f"""
CREATE OR REPLACE FUNCTION {PG_TEXT_FN}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM request_text WHERE id = OLD.id;
    RETURN OLD;
  END IF;
  UPDATE request_text SET doc = {doc} WHERE id = NEW.id;
  RETURN NEW;
END $$"""))
    conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {PG_TEXT_FN} ON {table}"))
    conn.execute(sa.text(f"CREATE TRIGGER {PG_TEXT_FN} AFTER UPDATE OF body, headers, key_id OR DELETE ON {table} "
                         f"FOR EACH ROW EXECUTE FUNCTION {PG_TEXT_FN}()"))


def pg_index_all(conn: sa.Connection) -> int:
    """Index every row in ``requests`` at once and set the mark (migration 0013, bulk loads):
    rows of transactions still running when this starts are left to the indexer; a row both
    saw is indexed once. Running indexers wait: the mark is locked first, as they lock it."""
    had_mark = conn.execute(sa.text("SELECT upto FROM request_text_state FOR UPDATE")).first() is not None
    safe = int(conn.execute(sa.text(f"SELECT {PG_SAFE_TXID}")).scalar() or 0)
    n = conn.execute(sa.text(f"INSERT INTO request_text (id, received_at, doc) SELECT id, received_at, {PG_EXPR} "
                             "FROM requests ON CONFLICT (id) DO NOTHING")).rowcount
    conn.execute(sa.text("UPDATE request_text_state SET upto = :s" if had_mark else
                         "INSERT INTO request_text_state (upto) VALUES (:s)"), {"s": safe})
    return int(n or 0)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def pg_escape_bytes(data: bytes) -> str:
    """``encode(data, 'escape')`` as PostgreSQL writes it: NUL and high bytes as ``\\ooo``,
    backslashes doubled, everything else as is (so a body substring maps to an index substring)."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0 or b >= 0x80:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return "".join(out)


def recheck(text: str, *, postgres: bool) -> sa.ColumnElement[bool]:
    """The text itself, row by row (no index): what every candidate the index gives must pass, and
    all there is for text shorter than a trigram."""
    if postgres:
        # The body is indexed in its escape encoding, the headers as stored: each pattern is matched
        # only in its own part (a backslash doubled by the escape encoding must not match a header's
        # JSON-doubled backslash).
        in_body, in_headers = _pg_patterns(text)
        in_body_sql = sa.text(f"{PG_BODY} ILIKE :fts_a ESCAPE '\\'").bindparams(fts_a=in_body)
        if in_headers is None:
            return in_body_sql  # type: ignore[return-value]
        return sa.or_(in_body_sql, sa.text("headers ILIKE :fts_b ESCAPE '\\'").bindparams(fts_b=in_headers))
    return sa.text(
        "(instr(lower(CASE WHEN requests.key_id IS NULL THEN CAST(substr(requests.body, 1, 65536) AS TEXT)"
        " END), lower(:fts_n)) > 0 OR instr(lower(requests.headers), lower(:fts_n)) > 0)"
    ).bindparams(fts_n=text)  # type: ignore[return-value]


def _pg_patterns(text: str) -> tuple[str, str | None]:
    """ILIKE patterns for the escape-encoded body and for the headers; none for the headers when
    the text holds a NUL (JSON writes it as ``\\u0000``, and PostgreSQL text cannot hold one)."""
    return ("%" + _like_escape(pg_escape_bytes(text.encode())) + "%",
            None if "\x00" in text else "%" + _like_escape(text) + "%")


def _grams(text: str) -> list[str]:
    """Its trigrams, each once (ignoring ASCII case), as written in the text."""
    seen: dict[str, str] = {}
    for i in range(len(text) - 2):
        seen.setdefault(text[i:i + 3].lower(), text[i:i + 3])
    return list(seen.values())


def rarest(counts: dict[str, int], k: int = GRAMS) -> list[str]:
    """The ``k`` trigrams with the fewest rows (ties: the first in the text), in text order."""
    order = {g: i for i, g in enumerate(counts)}
    chosen = sorted(counts, key=lambda g: (counts[g], order[g]))[:k]
    return sorted(chosen, key=order.__getitem__)


def _sqlite_counts(conn: sa.Connection, grams: list[str]) -> dict[str, int]:
    """Rows holding each trigram, estimated from the first :data:`PROBE_CAP` of its list (FTS5 reads
    a list lazily, in rowid order): exact for a rarer trigram, else scaled by the share of the
    indexed rowids that prefix spans."""
    lo, hi = conn.execute(sa.text("SELECT (SELECT min(rowid) FROM requests), upto FROM requests_fts_state")).one()
    span = max(1, int(hi or 0) - int(lo or 0) + 1)
    q = sa.text("SELECT count(*), max(r) FROM (SELECT rowid AS r FROM requests_fts WHERE requests_fts MATCH :g"
                " LIMIT :cap)")
    out = {}
    for g in grams:
        n, last = conn.execute(q, {"g": _fts_term(g), "cap": PROBE_CAP}).one()
        out[g] = int(n) if n < PROBE_CAP else n * span // max(1, int(last) - int(lo or 0) + 1)
    return out


def _pg_counts(conn: sa.Connection, grams: list[str]) -> dict[str, int]:
    """Of about :data:`SAMPLE` rows from random pages, those holding each trigram: PostgreSQL keeps
    no count per trigram, and a wrong guess costs time, never a result."""
    total = float(conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = 'requests'::regclass")).scalar()
                  or 0)
    percent = 100.0 if total <= SAMPLE else max(0.0001, 100.0 * SAMPLE / total)
    sample = conn.execute(sa.text(
        f"SELECT lower(substr({PG_EXPR}, 1, 2048)) FROM requests TABLESAMPLE SYSTEM (:p) LIMIT :n"),
        {"p": percent, "n": SAMPLE}).scalars().all()
    return {g: sum(g.lower() in t for t in sample) for g in grams}


def _fts_term(gram: str) -> str:
    return '"' + gram.replace('"', '""') + '"'


def _index_condition(conn: sa.Connection, text: str, *, postgres: bool) -> sa.ColumnElement[bool] | None:
    """Rows the index says may hold ``text``: those holding its rarest trigrams (a superset, so
    the caller rechecks); None when the index has no trigram of it to look up."""
    grams = [g for g in _grams(text) if "\x00" not in g]  # FTS5's query syntax ends at a NUL
    if postgres:
        # pg_trgm makes trigrams of the letters and digits only: a pattern of punctuation alone
        # would leave the index nothing to look up, and it would read all of itself
        grams = [g for g in grams if any(c.isalnum() for c in g)]
    if not grams:
        return None
    if len(grams) > GRAMS:
        grams = rarest(_pg_counts(conn, grams) if postgres else _sqlite_counts(conn, grams))
    if postgres:
        # each trigram as the body's escape encoding and the headers hold it (usually the same text)
        params = {f"fts_g{i}_{j}": p for i, g in enumerate(grams) for j, p in enumerate(dict.fromkeys(_pg_patterns(g)))}
        conds: dict[str, list[str]] = {}
        for name in params:
            conds.setdefault(name.rsplit("_", 1)[0], []).append(f"doc ILIKE :{name} ESCAPE '\\'")
        sql = " AND ".join("(" + " OR ".join(c) + ")" for c in conds.values())
        # rows of transactions past the indexer's mark are candidates too
        return sa.text(
            f"(requests.id, requests.received_at) IN (SELECT id, received_at FROM request_text WHERE {sql}"
            " UNION ALL SELECT u.id, u.received_at FROM requests u"
            " WHERE u.text_txid >= (SELECT upto FROM request_text_state))"
        ).bindparams(**params)  # type: ignore[return-value]
    # rows after the indexer's mark (the last moments' arrivals) are candidates too
    return sa.text(
        "requests.rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH :fts_q"
        " UNION ALL SELECT rowid FROM requests WHERE rowid > (SELECT upto FROM requests_fts_state))"
    ).bindparams(fts_q=" AND ".join(_fts_term(g) for g in grams))  # type: ignore[return-value]


def find(conn: sa.Connection, filtered: sa.Select[Any], id_col: sa.ColumnElement[str], text: str, *,
         postgres: bool, descending: bool, limit: int) -> list[sa.RowMapping]:
    """A page of ``filtered`` (the other filters applied, not ordered) holding ``text``, ordered
    by ``id_col``: the window checked row by row, then the index past it if the page is not full."""
    order = id_col.desc() if descending else id_col.asc()
    check = recheck(text, postgres=postgres)
    if len(text) < MIN_INDEXED:
        return list(conn.execute(filtered.where(check).order_by(order).limit(limit)).mappings())
    # the window's last row: from there on, the index
    edge = conn.execute(filtered.with_only_columns(id_col).order_by(order).offset(WINDOW - 1).limit(1)).scalar()
    window = filtered if edge is None else filtered.where(id_col >= edge if descending else id_col <= edge)
    rows = list(conn.execute(window.where(check).order_by(order).limit(limit)).mappings())
    if len(rows) == limit or edge is None:
        return rows
    past = id_col < edge if descending else id_col > edge
    cond = _index_condition(conn, text, postgres=postgres)
    stmt = filtered.where(past, check) if cond is None else filtered.where(past, cond, check)
    stmt = stmt.order_by(order).limit(limit - len(rows))
    rows += conn.execute(stmt).mappings() if postgres or cond is None else _not_indexed(conn, stmt)
    return rows


def _not_indexed(conn: sa.Connection, stmt: sa.Select[Any]) -> list[sa.RowMapping]:
    """``stmt`` reading ``requests NOT INDEXED``: rows only by the rowids the index gives. Without
    statistics (no ANALYZE) SQLite would rather walk a source's or client's index and test each row
    against the whole list of candidates (a third of a million rows for one page)."""
    compiled = stmt.compile(conn)
    sql = str(compiled)
    params = tuple(compiled.params[k] for k in compiled.positiontup or ())
    return list(conn.exec_driver_sql(sql.replace("\nFROM requests \n", "\nFROM requests NOT INDEXED \n"),
                                     params).mappings())


_INDEX_STEP = sa.text(
    "INSERT INTO requests_fts(rowid, body, headers) SELECT rowid, CASE WHEN key_id IS NULL THEN"
    " CAST(substr(body, 1, 65536) AS TEXT) END, headers FROM requests WHERE rowid > :lo AND rowid <= :hi")


def index_step(conn: sa.Connection, limit: int) -> int:
    """Index up to ``limit`` requests after the mark, in rowid order, and move the mark (one
    transaction: rows and mark together, so a row is indexed exactly once)."""
    lo = int(conn.execute(sa.text("SELECT upto FROM requests_fts_state")).scalar() or 0)
    hi = conn.execute(sa.text("SELECT max(rowid) FROM (SELECT rowid FROM requests WHERE rowid > :lo"
                              " ORDER BY rowid LIMIT :n)"), {"lo": lo, "n": limit}).scalar()
    if hi is None:
        return 0
    n = conn.execute(_INDEX_STEP, {"lo": lo, "hi": hi}).rowcount
    conn.execute(sa.text("UPDATE requests_fts_state SET upto = :hi"), {"hi": hi})
    return int(n or 0)


def pg_index_step(conn: sa.Connection, limit: int) -> int:
    """PostgreSQL: index the rows of the transactions after the mark, oldest first, about
    ``limit`` rows (whole transactions) and only those older than every transaction still
    running; move the mark in the same transaction. Another process's indexer holding the mark
    makes this a no-op (each process runs one)."""
    lo = conn.execute(sa.text("SELECT upto FROM request_text_state FOR UPDATE SKIP LOCKED")).scalar()
    if lo is None:
        return 0
    safe = int(conn.execute(sa.text(f"SELECT {PG_SAFE_TXID}")).scalar() or 0)
    if safe <= lo:
        return 0
    t = conn.execute(sa.text("SELECT text_txid FROM requests WHERE text_txid >= :lo AND text_txid < :safe "
                             "ORDER BY text_txid OFFSET :n LIMIT 1"), {"lo": lo, "safe": safe, "n": limit}).scalar()
    hi = safe if t is None else max(int(t), int(lo) + 1)
    n = conn.execute(sa.text(f"INSERT INTO request_text (id, received_at, doc) SELECT id, received_at, {PG_EXPR} "
                             "FROM requests WHERE text_txid >= :lo AND text_txid < :hi ON CONFLICT (id) DO NOTHING"),
                     {"lo": lo, "hi": hi}).rowcount
    conn.execute(sa.text("UPDATE request_text_state SET upto = :hi"), {"hi": hi})
    return max(int(n or 0), 1)  # the mark moved: not idle, even if every row was indexed already


class TextIndexer:
    """A thread that indexes new requests in small transactions of its own. After a full
    batch it rests nine times as long as the batch took, so under a burst it takes at most a tenth
    of the write lock and of a core (on two shared cores every CPU cycle is ingest's), and the
    index catches up when the burst ends; searches meanwhile check the unindexed rows one by one."""

    BATCH = 100
    REST = 9
    IDLE_S = 0.5
    WAL_PATIENCE = 4  # rests in a row for a large WAL; then nobody is rewinding it: write anyway

    def __init__(self, engine: sa.Engine, wal_over_limit: Callable[[], bool] = lambda: False) -> None:
        self.engine = engine  # its own (a writer's pool keeps one connection per thread)
        self.wal_over_limit = wal_over_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="hookbay-text-index", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=30)
            self._thread = None
        self.engine.dispose()

    def catch_up(self) -> int:
        total = 0
        while n := self.step():
            total += n
        return total

    def step(self) -> int:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                return pg_index_step(conn, self.BATCH)
            return index_step(conn, self.BATCH)

    def _loop(self) -> None:
        waited = 0
        while not self._stop.is_set():
            if self.wal_over_limit() and waited < self.WAL_PATIENCE:
                # Ingest's writer is about to rewind a large WAL (or the disk is full): writing the
                # index now would grow the WAL further and take space that ingest needs. The writer
                # rewinds only before its own commits, so with no ingest the WAL stays long: after
                # a few rests this thread writes, and its commit rewinds it (the background PASSIVE
                # checkpoint has copied it all by then).
                waited += 1
                self._stop.wait(self.IDLE_S)
                continue
            waited = 0
            t = time.monotonic()
            try:
                n = self.step()
            except Exception as e:  # a locked or full database: try again later, the mark did not move
                log.warning("text_index_failed", error=type(e).__name__)
                self._stop.wait(5)
                continue
            self._stop.wait(self.REST * (time.monotonic() - t) if n >= self.BATCH else self.IDLE_S)
