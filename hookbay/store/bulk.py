"""Set-at-a-time writes for the worker's hot path (records, profiles, consent ledger, receipts).

SQLAlchemy Core's ``executemany`` builds and processes every row's parameters in Python, and on
PostgreSQL its INSERTs become one statement with thousands of bind parameters. Here rows go to the
driver as tuples:

- SQLite: ``executemany`` of one prepared statement (the loop runs in C), or one multi-row
  ``VALUES`` when rows must come back (``RETURNING``);
- PostgreSQL: one statement per batch whatever its size, with one array parameter per column
  (``unnest``), so the statement text never changes, the server prepares it once, and a batch is one
  round trip.

Column types come from the table in :mod:`hookbay.store.schema`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

_PG_ARRAY = {
    sa.BigInteger: "int8[]",
    sa.Integer: "int4[]",
    sa.Boolean: "bool[]",
    sa.LargeBinary: "bytea[]",
}
_SQLITE_MAX_PARAMS = 30000


def _pg_array_type(col: sa.Column[Any]) -> str:
    t = col.type
    if isinstance(t, sa.types.Variant):  # BigId: BigInteger with an Integer variant for SQLite
        t = t.impl  # type: ignore[assignment]
    for kind, name in _PG_ARRAY.items():
        if isinstance(t, kind):
            return name
    return "text[]"


def _is_pg(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql"


_SEP, _NULL = "\x1f", "\x1e"  # ASCII unit / record separators


def pg_array(values: Sequence[Any], pg_type: str) -> tuple[str, Any]:
    """One array parameter for PostgreSQL: an SQL expression with one placeholder, and its value.

    Usually the elements joined by a control character and split by ``string_to_array`` on the
    server: building that string is one C call, while psycopg adapts a list element by element in
    Python (a few microseconds per row and column). When an element could be mistaken for the
    separator or the NULL marker (or for an empty array), the list goes as a binary array."""
    n = len(values)
    if pg_type != "bytea[]":
        nulls = values.count(None)
        joined: str | None
        if pg_type == "text[]":
            try:
                joined = _SEP.join(values if not nulls else [_NULL if v is None else v for v in values])
            except TypeError:  # not all text
                joined = None
        elif pg_type == "bool[]":
            joined = _SEP.join(_NULL if v is None else ("t" if v else "f") for v in values)
        else:
            joined = _SEP.join(map(str, values) if not nulls else (_NULL if v is None else str(v) for v in values))
        if joined is not None and (joined or n > 1) and joined.count(_SEP) == n - 1 and joined.count(_NULL) == nulls:
            return f"string_to_array(%s, E'\\x1f', E'\\x1e')::{pg_type}", joined
    return f"%b::{pg_type}", list(values)


def _pg_arrays(table: sa.Table, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, tuple[Any, ...]]:
    """``unnest`` arguments for ``rows`` (tuples in ``cols`` order): SQL and parameters."""
    exprs, params = [], []
    for name, values in zip(cols, zip(*rows, strict=True), strict=True):
        expr, param = pg_array(values, _pg_array_type(table.c[name]))
        exprs.append(expr)
        params.append(param)
    return ", ".join(exprs), tuple(params)


def insert(
    conn: sa.Connection, table: sa.Table, cols: Sequence[str], rows: Sequence[Sequence[Any]], *,
    on_conflict_nothing: bool = False, returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """INSERT ``rows`` (tuples in ``cols`` order); returns the ``returning`` columns of the rows
    actually inserted (with ``on_conflict_nothing``, a row that hit a unique key is not returned)."""
    if not rows:
        return []
    names = ", ".join(cols)
    conflict = " ON CONFLICT DO NOTHING" if on_conflict_nothing else ""
    ret = f" RETURNING {', '.join(returning)}" if returning else ""
    if _is_pg(conn):
        arrays, params = _pg_arrays(table, cols, rows)
        sql = f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays}){conflict}{ret}"
        result = conn.exec_driver_sql(sql, params)
        return [tuple(r) for r in result] if returning else []
    one = "(" + ", ".join("?" * len(cols)) + ")"
    if not returning:
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES {one}{conflict}", list(rows))
        return []
    out: list[tuple[Any, ...]] = []
    per = max(1, _SQLITE_MAX_PARAMS // len(cols))
    for i in range(0, len(rows), per):
        chunk = rows[i:i + per]
        sql = f"INSERT INTO {table.name} ({names}) VALUES {', '.join([one] * len(chunk))}{conflict}{ret}"
        out.extend(tuple(r) for r in conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row)))
    return out


def update(conn: sa.Connection, table: sa.Table, key: str, cols: Sequence[str],
           rows: Sequence[Sequence[Any]]) -> None:
    """``UPDATE table SET cols... WHERE key = ...`` for each row: tuples of the ``cols`` values,
    then the key value."""
    if not rows:
        return
    if _is_pg(conn):
        names = [*cols, key]
        arrays, params = _pg_arrays(table, names, rows)
        sets = ", ".join(f"{c} = u.{c}" for c in cols)
        sql = (f"UPDATE {table.name} SET {sets} FROM unnest({arrays}) AS u({', '.join(names)}) "
               f"WHERE {table.name}.{key} = u.{key}")
        conn.exec_driver_sql(sql, params)
        return
    sets = ", ".join(f"{c} = ?" for c in cols)
    conn.exec_driver_sql(f"UPDATE {table.name} SET {sets} WHERE {key} = ?", list(rows))


def select_in(conn: sa.Connection, table: sa.Table, cols: Sequence[str], key: str, values: Iterable[Any],
              *, for_update: bool = False, order_by: str | None = None) -> list[tuple[Any, ...]]:
    """``SELECT cols FROM table WHERE key IN values`` (PostgreSQL: ``= ANY(array)``)."""
    vals = list(values)
    if not vals:
        return []
    names = ", ".join(cols)
    order = f" ORDER BY {order_by}" if order_by else ""
    if _is_pg(conn):
        lock = " FOR UPDATE" if for_update else ""
        expr, param = pg_array(vals, _pg_array_type(table.c[key]))
        sql = f"SELECT {names} FROM {table.name} WHERE {key} = ANY({expr}){order}{lock}"
        return [tuple(r) for r in conn.exec_driver_sql(sql, (param,))]
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(vals), 500):
        chunk = vals[i:i + 500]
        sql = f"SELECT {names} FROM {table.name} WHERE {key} IN ({', '.join('?' * len(chunk))}){order}"
        out.extend(tuple(r) for r in conn.exec_driver_sql(sql, tuple(chunk)))
    return out


def insert_dicts(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`insert` for rows given as dicts with the same keys."""
    if rows:
        cols = list(rows[0])
        insert(conn, table, cols, [tuple(r[c] for c in cols) for r in rows])


def delete_in(conn: sa.Connection, table: sa.Table, key: str, values: Iterable[Any]) -> None:
    """``DELETE FROM table WHERE key IN values`` (PostgreSQL: ``= ANY(array)``)."""
    vals = list(values)
    if not vals:
        return
    if _is_pg(conn):
        expr, param = pg_array(vals, _pg_array_type(table.c[key]))
        conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE {key} = ANY({expr})", (param,))
        return
    for i in range(0, len(vals), 500):
        chunk = vals[i:i + 500]
        conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE {key} IN ({', '.join('?' * len(chunk))})", tuple(chunk))
