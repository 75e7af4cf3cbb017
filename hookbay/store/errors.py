"""What a database error means to the caller, and how to name it in a log without its data.

A driver's message can quote the row it choked on (PostgreSQL's ``DETAIL: Key (value)=(ann@x.co)``)
and SQLAlchemy's adds the statement's parameters, so neither is ever logged: only the error's
class, its SQLSTATE and the statement's verb and table.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

# deadlock_detected, serialization_failure, lock_not_available (our lock_timeout)
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
_STATEMENT = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM|SELECT|WITH)\s+(\w+)?", re.IGNORECASE)


class ConcurrentChange(Exception):
    """Another worker changed an identity or order this transaction read (it created one of our new
    keys or orders, or merged away a profile we matched): run the transaction again, which then
    sees the change."""


def is_retryable(e: BaseException) -> bool:
    """A lost race that a fresh transaction can win (see ``Store.write_retrying``)."""
    if isinstance(e, ConcurrentChange):
        return True
    orig = getattr(e, "orig", None)
    return getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def statement_name(e: BaseException) -> str | None:
    """``INSERT INTO profiles``, from the failed statement's text (never its parameters)."""
    stmt = getattr(e, "statement", None)
    if not isinstance(stmt, str):
        return None
    m = _STATEMENT.match(stmt)
    if m is None:
        return None
    verb = " ".join(m.group(1).upper().split())
    if verb in ("SELECT", "WITH"):
        table = re.search(r"\bFROM\s+(\w+)", stmt, re.IGNORECASE)
        return f"SELECT FROM {table.group(1)}" if table else "SELECT"
    return f"{verb} {m.group(2)}" if m.group(2) else verb


def describe(e: BaseException) -> dict[str, Any]:
    """Log fields for an exception that may carry customer data: its class, the driver's error
    class and SQLSTATE, the statement's name, and where it was raised. Never the message."""
    out: dict[str, Any] = {"error": type(e).__name__}
    orig = getattr(e, "orig", None) if isinstance(e, sa.exc.StatementError) else None
    if orig is not None:
        out["db_error"] = type(orig).__name__
        code = getattr(orig, "sqlstate", None)
        if code:
            out["sqlstate"] = code
    name = statement_name(e)
    if name:
        out["statement"] = name
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code_ = tb.tb_frame.f_code
        out["at"] = f"{code_.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code_.co_name}"
    return out
