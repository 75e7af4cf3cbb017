"""Errors as the CLI shows them: one plain line per problem, naming the option or setting at fault.

Messages never echo SQL or its parameters (they can hold customer data), only the driver's first line.
"""

from __future__ import annotations

import sys
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from hookbay.errors import HookbayError

KNOWN_ERRORS: tuple[type[BaseException], ...] = (HookbayError, ValidationError, sa.exc.OperationalError, OSError)

# Why a limit exists, for the errors users meet most.
_WHY: dict[tuple[str, str], str] = {
    ("secret", "string_too_short"): "a shorter signing secret is easy to guess",
}


def describe_error(e: BaseException) -> list[str]:
    if isinstance(e, HookbayError):
        detail = e.detail
        if isinstance(detail, dict) and detail:
            return [f"{e.message} ({', '.join(f'{k}: {v}' for k, v in detail.items())})"]
        return [f"{e.message} ({detail})" if detail else e.message]
    if isinstance(e, ValidationError):
        return [_plain(err, e.title) for err in e.errors(include_url=False)]
    if isinstance(e, sa.exc.OperationalError):
        return [f"the database is unavailable: {_first_line(e.orig)}"]
    if isinstance(e, OSError) and e.strerror:
        return [f"{e.filename}: {e.strerror}" if e.filename else e.strerror]
    return [f"unexpected {type(e).__name__}: {_first_line(e)} (rerun with --debug or HOOKBAY_DEBUG=1 "
            "for the traceback)"]


def _first_line(e: Any) -> str:
    if isinstance(e, sa.exc.StatementError):  # its text carries the SQL and parameters
        e = e.orig
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _plain(err: Any, title: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    flag = "--" + loc.replace("_", "-")
    if title == "Settings":
        name = "HOOKBAY_" + loc.upper()
    elif flag in sys.argv:
        name = flag
    else:
        name = loc or "value"
    what = {
        "missing": "is required",
        "extra_forbidden": "is not a known setting",
        "string_too_short": f"is too short: it needs at least {ctx.get('min_length')} characters",
        "string_too_long": f"is too long: it may have at most {ctx.get('max_length')} characters",
        "string_pattern_mismatch": f"has characters that are not allowed (it must match {ctx.get('pattern')})",
    }.get(kind)
    if what is None:
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        what = "is invalid: " + msg[:1].lower() + msg[1:]
    why = _WHY.get((str(err["loc"][-1]) if err["loc"] else "", kind))
    return f"{name} {what}" + (f" ({why})" if why else "")
