"""The rows behind readiness: the worker's health row and the probe write (``meta`` table).

Worker state lives in the database, not in memory, because the worker may run in another process
(or host) than the ``serve`` answering ``/readyz``. :func:`record_batch` writes at most once per
``OK_WRITE_EVERY_S`` while healthy and once per ``FAIL_WRITE_EVERY_S`` while failing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from hookbay.ids import now_us
from hookbay.store import schema

if TYPE_CHECKING:
    from hookbay.store.interface import StoreInterface

OK_WRITE_EVERY_S = 5.0
FAIL_WRITE_EVERY_S = 1.0
WORKER_KEY = "worker_health"
PROBE_KEY = "ready_probe"


@dataclass
class _BatchState:
    last_write: float = 0.0
    failing: bool = False


_state: dict[int, _BatchState] = {}


async def record_batch(store: StoreInterface, ok: bool, *, at_us: int | None = None) -> None:
    """Call after each worker batch. A healthy worker writes a heartbeat every few seconds; a failing
    one writes when it starts failing and then about once a second. Never raises: health
    bookkeeping must not break the worker (a failing database shows in the writer checks)."""
    st = _state.setdefault(id(store), _BatchState())
    mono = time.monotonic()
    changed = st.failing == ok
    st.failing = not ok
    every = OK_WRITE_EVERY_S if ok else FAIL_WRITE_EVERY_S
    if not changed and mono - st.last_write < every and at_us is None:
        return
    st.last_write = mono
    now = now_us() if at_us is None else at_us

    def w(conn: sa.Connection) -> None:
        m = schema.meta
        raw = conn.execute(sa.select(m.c.value).where(m.c.key == WORKER_KEY)).scalar()
        cur = orjson.loads(raw) if raw else {}
        if ok:
            new = {"ok": now, "fail": cur.get("fail", 0), "since": 0}
        else:
            new = {"ok": cur.get("ok", 0), "fail": now, "since": cur.get("since") or now}
        val = orjson.dumps(new).decode()
        if raw is None:
            conn.execute(m.insert().values(key=WORKER_KEY, value=val))
        else:
            conn.execute(m.update().where(m.c.key == WORKER_KEY).values(value=val))

    try:
        await store.write(w, durable=False)
    except Exception:
        st.last_write = 0.0


def probe_write(conn: sa.Connection) -> None:
    """Rewrite one ``meta`` row (through the writer, so it waits behind and fails like ingest). On
    PostgreSQL first take the lock an INSERT into ``requests`` and ``jobs`` takes: another
    session's lock on those tables blocks ingest while other tables still take writes."""
    m = schema.meta
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE requests, jobs IN ROW EXCLUSIVE MODE")
    val = str(now_us())
    if conn.execute(m.update().where(m.c.key == PROBE_KEY).values(value=val)).rowcount == 0:
        conn.execute(m.insert().values(key=PROBE_KEY, value=val))


def queue_state(now: int) -> Any:
    def q(conn: sa.Connection) -> tuple[int | None, dict[str, Any]]:
        """The oldest due pending job (an index range scan on ``ix_jobs_claim``: a job waiting out
        a retry back-off is not lag until it is due), and the worker's health row."""
        j = schema.jobs
        oldest = conn.execute(sa.select(sa.func.min(j.c.run_after))
                              .where(j.c.state == "pending", j.c.run_after <= now)).scalar()
        raw = conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == WORKER_KEY)).scalar()
        return (int(oldest) if oldest is not None else None), (orjson.loads(raw) if raw else {})

    return q
