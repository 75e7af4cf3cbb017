"""Free-text conditions over request bodies and headers, on the index migration 0010 builds.

Both dialects answer the same question: does the text occur, ignoring ASCII case, in the first
64 KiB of the plaintext body or in the headers (JSON text)? SQLite asks its FTS5 trigram table for
the rows holding every trigram of the text, then checks each; PostgreSQL a GIN trigram index on an expression that must stay identical to the migration's.
Text shorter than three characters has no trigram, so it falls back to a scan (exact bytes).
"""

from __future__ import annotations

import sqlalchemy as sa

from hookbay.store.schema import requests as R

MIN_INDEXED = 3
PG_EXPR = ("((CASE WHEN key_id IS NULL THEN coalesce(encode(substring(body from 1 for 65536), 'escape'), '')"
           " ELSE '' END) || ' ' || headers)")


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
        patterns = {"%" + _like_escape(pg_escape_bytes(text.encode())) + "%", "%" + _like_escape(text) + "%"}
        conds = [sa.text(f"{PG_EXPR} ILIKE :{name} ESCAPE '\\'").bindparams(sa.bindparam(name, p))
                 for name, p in zip(("fts_a", "fts_b"), sorted(patterns), strict=False)]
        return sa.or_(*conds) if len(conds) > 1 else conds[0]  # type: ignore[return-value]
    # the index has trigrams without positions: it finds rows holding every trigram, the row rechecks
    grams = dict.fromkeys(text[i:i + 3] for i in range(len(text) - 2))
    match = " AND ".join('"' + g.replace('"', '""') + '"' for g in grams)
    return sa.text(
        "requests.rowid IN (SELECT rowid FROM requests_fts WHERE requests_fts MATCH :fts_q)"
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
