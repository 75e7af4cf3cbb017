"""Free-text conditions over request bodies and headers, on the index migration 0010 builds.

Both dialects answer the same question: does the text occur, ignoring ASCII case, in the first
64 KiB of the plaintext body or in the headers (JSON text)? SQLite asks its FTS5 trigram table for
the rows holding every trigram of the text, then checks each; PostgreSQL a GIN trigram index on an
expression that must stay identical to the migration's. Text shorter than three characters has no trigram, so it falls back to a scan (exact bytes).

On SQLite the index is filled by :class:`TextIndexer` after the ingest commit (trigram indexing
tripled the writer's CPU per row inside the commit); a search still sees every row, as the rows the
indexer has not reached yet are checked one by one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
import structlog

from hookbay.store.schema import requests as R

log = structlog.get_logger("hookbay.store")

MIN_INDEXED = 3
PG_BODY = ("(CASE WHEN key_id IS NULL THEN coalesce(encode(substring(body from 1 for 65536), 'escape'), '')"
           " ELSE '' END)")
PG_EXPR = f"({PG_BODY} || ' ' || headers)"


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


def text_condition(text: str, *, postgres: bool) -> sa.ColumnElement[bool]:
    if len(text) < MIN_INDEXED:
        return _scan(text, postgres=postgres)
    if postgres:
        # The body is indexed in its escape encoding, the headers as stored: the index narrows rows on
        # the joined text, and the recheck matches each pattern only in its own part (a backslash
        # doubled by the escape encoding must not match a header's JSON-doubled backslash).
        in_body = "%" + _like_escape(pg_escape_bytes(text.encode())) + "%"
        in_headers = "%" + _like_escape(text) + "%"
        return sa.text(  # type: ignore[return-value]
            f"({PG_EXPR} ILIKE :fts_a ESCAPE '\\' OR {PG_EXPR} ILIKE :fts_b ESCAPE '\\')"
            f" AND ({PG_BODY} ILIKE :fts_a ESCAPE '\\' OR headers ILIKE :fts_b ESCAPE '\\')"
        ).bindparams(fts_a=in_body, fts_b=in_headers)
    # the index has trigrams without positions: it finds rows holding every trigram, the row rechecks
    grams = dict.fromkeys(text[i:i + 3] for i in range(len(text) - 2))
    match = " AND ".join('"' + g.replace('"', '""') + '"' for g in grams)
    # rows after the indexer's mark (the last moments' arrivals) are checked one by one
    return sa.text(
        "(requests.rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH :fts_q)"
        " OR requests.rowid > (SELECT upto FROM requests_fts_state))"
        " AND (instr(lower(CASE WHEN requests.key_id IS NULL THEN CAST(substr(requests.body, 1, 65536) AS TEXT)"
        " END), lower(:fts_n)) > 0 OR instr(lower(requests.headers), lower(:fts_n)) > 0)"
    ).bindparams(fts_q=match, fts_n=text)  # type: ignore[return-value]


def _scan(text: str, *, postgres: bool) -> sa.ColumnElement[bool]:
    """Exact bytes anywhere in the body or headers: no index, so only for very short text."""
    needle = text.encode()
    in_body: sa.ColumnElement[bool] = (
        sa.text("position(:needle IN requests.body) > 0").bindparams(
            sa.bindparam("needle", needle, type_=sa.LargeBinary))  # type: ignore[assignment]
        if postgres
        else sa.func.instr(R.c.body, sa.literal(needle, sa.LargeBinary)) > 0
    )
    return sa.or_(in_body, R.c.headers.like("%" + _like_escape(text) + "%", escape="\\"))


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


class TextIndexer:
    """SQLite: a thread that indexes new requests in small transactions of its own. After a full
    batch it rests nine times as long as the batch took, so under a burst it takes at most a tenth
    of the write lock and of a core (on two shared cores every CPU cycle is ingest's), and the
    index catches up when the burst ends; searches meanwhile check the unindexed rows one by one."""

    BATCH = 100
    REST = 9
    IDLE_S = 0.5

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
            return index_step(conn, self.BATCH)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.wal_over_limit():
                # The checkpointer is rewinding a large WAL (or the disk is full): writing the index
                # now would grow the WAL further and take space that ingest needs.
                self._stop.wait(self.IDLE_S)
                continue
            t = time.monotonic()
            try:
                n = self.step()
            except Exception as e:  # a locked or full database: try again later, the mark did not move
                log.warning("text_index_failed", error=type(e).__name__)
                self._stop.wait(5)
                continue
            self._stop.wait(self.REST * (time.monotonic() - t) if n >= self.BATCH else self.IDLE_S)
