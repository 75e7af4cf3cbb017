"""Poison requests fail alone: a fault injected into the parser, or into the store's profile step,
for one request in the middle of a batch of 100 leaves 99 processed, 1 failed with
``internal_error``, nothing pending, and no customer data in the logs. Real worker and store on
SQLite and PostgreSQL; the faults are monkeypatched into the real modules."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import structlog

from hookbay.parsers import contact as contact_parser
from hookbay.processing import parsepool
from hookbay.processing import worker as worker_mod
from hookbay.processing.worker import JobRetryPolicy, Worker
from hookbay.store import Store, schema
from hookbay.store import profiles as profile_store
from hookbay.store import writer as writer_mod
from hookbay.store.sources import SourceCache
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.integration.test_identity_stateful import request_row

POISON_EMAIL = "poison.person@example.org"
POISON_PHONE = "+13035550666"


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Every structlog line the worker and writer emit, rendered as JSON as in production."""
    buf = io.StringIO()
    old = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=buf), cache_logger_on_first_use=False)
    monkeypatch.setattr(worker_mod, "log", structlog.get_logger("hookbay.worker"))
    monkeypatch.setattr(writer_mod, "log", structlog.get_logger("hookbay.writer"))
    monkeypatch.setattr(parsepool, "log", structlog.get_logger("hookbay.parsepool"))
    try:
        yield buf
    finally:
        structlog.configure(**old)


async def _run(db_url: str, tmp_path: Path) -> dict[str, Any]:
    settings = make_settings(db_url, tmp_path, worker_batch=100, worker_yield_ratio=0, job_max_attempts=3)
    store = Store(settings.effective_database_url)
    store.migrate()
    await store.start()
    try:
        src, _ = await store.create_source(name="c", client_id="acme", config={"parser": "contact"})
        ids = []
        for i in range(100):
            poison = i == 50
            body = orjson.dumps({"SourceName": "s", "SourceType": "t",
                                 "Email": POISON_EMAIL if poison else f"u{i}@example.org",
                                 "Phone": POISON_PHONE if poison else None,
                                 "FirstName": "Poison" if poison else "Ok", "DateOfBirth": "1980-01-02"})
            row = request_row(src.id, "acme", body, 1_750_000_000_000_000 + i)
            ids.append(await store.writer.ingest(row))
        cache = SourceCache(store, 1 << 20)
        await cache.reload()
        w = Worker(store, cache, settings, worker_id="w")
        w.policy = JobRetryPolicy(base=0.01, cap=0.05, max_attempts=3)
        first = await w.run_once()
        assert first == 100, "the whole batch was claimed at once"
        for _ in range(200):
            if await store.queue_depth() == 0:
                break
            await w.run_once()
            await asyncio.sleep(0.02)
        R = schema.requests
        rows = await store.read(lambda c: {r.id: r for r in c.execute(sa.select(R.c.id, R.c.state, R.c.receipt)
                                                                       .where(R.c.id.in_(ids)))})
        return {"ids": ids, "rows": rows, "depth": await store.queue_depth()}
    finally:
        await store.close()


def _check(out: dict[str, Any], logs: io.StringIO) -> None:
    rows, poison = out["rows"], out["ids"][50]
    states = [rows[i].state for i in out["ids"]]
    assert states.count("processed") == 99
    assert rows[poison].state == "failed"
    assert out["depth"] == 0, "nothing stuck"
    err = orjson.loads(rows[poison].receipt)["errors"][0]
    assert err["code"] == "internal_error"
    assert poison in err["message"] and POISON_EMAIL not in err["message"]
    text = logs.getvalue()
    assert poison in text, "the operator's log names the request"
    for secret in (POISON_EMAIL, POISON_PHONE, "Poison", "1980-01-02", "u1@example.org"):
        assert secret not in text, f"{secret!r} leaked into the logs"


def test_parser_fault_fails_one_request(db_url: str, tmp_path: Path, logs: io.StringIO,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real = contact_parser.parse

    def faulty(docs: Any, **kw: Any) -> Any:
        if any(isinstance(d, dict) and d.get("Email") == POISON_EMAIL for d in docs):
            raise RuntimeError(f"parser bug while reading {POISON_EMAIL} {POISON_PHONE}")
        return real(docs, **kw)

    monkeypatch.setattr(contact_parser, "parse", faulty)
    failed_before = _metric("hookbay_jobs_failed_total", {"reason": "internal_error"})
    retries_before = _metric("hookbay_job_retries_total")
    _check(asyncio.run(_run(db_url, tmp_path)), logs)
    assert _metric("hookbay_jobs_failed_total", {"reason": "internal_error"}) == failed_before + 1
    assert _metric("hookbay_job_retries_total") == retries_before + 2  # attempts 1 and 2 of 3 were retried


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    from hookbay.metrics import registry

    return registry.get_sample_value(name, labels or {}) or 0.0


def test_store_fault_fails_one_request(db_url: str, tmp_path: Path, logs: io.StringIO,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A constraint violation in the store for one request: its batch is retried one by one."""
    real = profile_store.apply_contacts

    def faulty(conn: sa.Connection, items: list[dict[str, Any]], now: int) -> Any:
        if any(it["contact"].get("email") == POISON_EMAIL for it in items):
            # What SQLAlchemy raises for a unique violation: statement, parameters, the driver's message.
            raise sa.exc.IntegrityError("INSERT INTO profiles (id, email) VALUES (?, ?)", ("prf_x", POISON_EMAIL),
                                        Exception(f"duplicate key: Key (email)=({POISON_EMAIL}) already exists"))
        return real(conn, items, now)

    monkeypatch.setattr(profile_store, "apply_contacts", faulty)
    out = asyncio.run(_run(db_url, tmp_path))
    _check(out, logs)
    assert '"statement": "INSERT INTO profiles"' in logs.getvalue()


def test_replay_reports_a_failing_request_and_goes_on(db_url: str, tmp_path: Path, logs: io.StringIO,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hookbay.processing.replay import replay

    out = asyncio.run(_run(db_url, tmp_path))  # 99 processed, the poison one failed: no fault yet
    real = contact_parser.parse

    def faulty(docs: Any, **kw: Any) -> Any:
        if any(isinstance(d, dict) and d.get("Email") == "u7@example.org" for d in docs):
            raise RuntimeError("parser bug on u7@example.org")
        return real(docs, **kw)

    monkeypatch.setattr(contact_parser, "parse", faulty)

    async def go() -> list[dict[str, Any]]:
        settings = make_settings(db_url, tmp_path)
        store = Store(settings.effective_database_url)
        await store.start()
        try:
            cache = SourceCache(store, 1 << 20)
            await cache.reload()
            return await replay(store, cache, request_ids=out["ids"][:20])
        finally:
            await store.close()

    items = asyncio.run(go())
    assert len(items) == 20
    bad = [it for it in items if "failed" in it]
    assert [it["request_id"] for it in bad] == [out["ids"][7]]
    assert "u7@example.org" not in bad[0]["failed"] and "u7@example.org" not in logs.getvalue()
    assert all(it.get("new_state") == "processed" for it in items if "failed" not in it)


def test_wait_answers_json_500_with_the_request_id(db_url: str, live_server_factory,  # type: ignore[no-untyped-def]
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``?wait=1`` on a request whose processing raises: the one JSON error shape, never plain text;
    the request stays stored with its job put back for the worker (none runs here, so ``?wait=1``
    surely holds the job)."""
    live = live_server_factory(db_url, run_worker="off")
    real = profile_store.apply_contacts

    def faulty(conn: sa.Connection, items: list[dict[str, Any]], now: int) -> Any:
        if any(it["contact"].get("email") == POISON_EMAIL for it in items):
            raise RuntimeError(f"bug on {POISON_EMAIL}")
        return real(conn, items, now)

    monkeypatch.setattr(profile_store, "apply_contacts", faulty)
    src = live.create_source(name="c", client_id="acme", config={"parser": "contact"})
    r = live.client.post(f"/V1/Data/{src['token']}", params={"wait": "1"},
                         json={"SourceName": "s", "SourceType": "t", "Email": POISON_EMAIL})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    rid = r.headers["x-request-id"]
    assert err["code"] == "internal_error" and err["detail"]["request_id"] == rid
    assert POISON_EMAIL not in r.text
    assert live.client.get(f"/V1/Requests/{rid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                           ).json()["state"] == "pending"


def _raises_with_data(body: bytes) -> None:
    """A parser bug whose message quotes the body (run in the parse pool's child process)."""
    raise ValueError(f"cannot handle {body!r}")


def test_parse_pool_turns_a_parser_bug_into_a_clean_error(tmp_path: Path, logs: io.StringIO) -> None:
    from hookbay.errors import HookbayError
    from hookbay.processing.parsepool import ParsePool

    async def go() -> None:
        pool = ParsePool(make_settings("sqlite://", tmp_path))
        try:
            with pytest.raises(HookbayError) as info:
                await pool.run(_raises_with_data, POISON_EMAIL.encode())
            assert info.value.status == 500 and POISON_EMAIL not in info.value.message
        finally:
            pool.close()

    asyncio.run(go())
    assert "parse_failed" in logs.getvalue() and POISON_EMAIL not in logs.getvalue()


def test_v1_test_answers_json_500_on_a_bug(live, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Whatever raises inside ingest, the sender gets the one JSON error shape, not plain text."""
    from hookbay.ingest import endpoint as ingest

    def broken(*_: Any) -> Any:
        raise RuntimeError(f"bug quoting {POISON_EMAIL}")

    monkeypatch.setattr(ingest, "check_well_formed", broken)
    src = live.create_source(name="c", client_id="acme", config={"parser": "contact"})
    for path in ("/V1/Test", "/V1/Data"):
        r = live.client.post(f"{path}/{src['token']}", json={"Email": POISON_EMAIL})
        assert r.status_code == 500, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["code"] == "internal_error" and POISON_EMAIL not in r.text
