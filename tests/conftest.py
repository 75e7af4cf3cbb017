"""Shared fixtures: a database per test on SQLite and on PostgreSQL, and a live server on loopback.

PostgreSQL comes from HOOKBAY_TEST_PG_URL (default: the local server, database ``test``); each test
gets its own fresh database. In CI (``CI=true``) an unreachable PostgreSQL fails instead of skipping.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings

# Property tests assert behaviour, not speed: a loaded CI machine must not fail one on hypothesis's
# default 200 ms per-example deadline.
hypothesis_settings.register_profile("hookbay", deadline=None)
# scripts/mutation.py selects this one: a mutant needs one failing example, not the smallest one
# (shrinking a failure of the stateful profile test took minutes per mutant).
hypothesis_settings.register_profile(
    "mutation", deadline=None, max_examples=20, database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate])
hypothesis_settings.load_profile(os.environ.get("HOOKBAY_HYPOTHESIS_PROFILE", "hookbay"))

PG_ADMIN_URL = os.environ.get("HOOKBAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = "test-admin-token"


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as c:
            c.execute("SELECT 1")
        return None
    except Exception as e:
        return str(e)


@pytest.fixture(scope="session")
def pg_ok() -> None:
    err = _pg_available()
    if err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}: {err}")
        pytest.skip(f"PostgreSQL unreachable: {err}")


def make_pg_database() -> tuple[str, str]:
    import psycopg

    name = "hb_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_ok: None) -> Iterator[str]:
    """A fresh PostgreSQL database, for what runs on PostgreSQL only."""
    name, url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL (as a user would set HOOKBAY_DATABASE_URL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hookbay.db'}"
        return
    request.getfixturevalue("pg_ok")
    name, url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the kernel hands out (bind to 0)
    can be taken by any outgoing connection (a server's PostgreSQL pool) before the process it
    was meant for binds it, which failed nginx's bind once in a full run."""
    import random

    hi = min(_ephemeral_low(), 32768) - 1
    for _ in range(200):
        port = random.randint(max(1024, hi - 12000), hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_migrate(env: dict[str, str]) -> dict[str, str]:
    """Create the schema as a user does before management commands (`hookbay migrate` or a first
    `hookbay serve`): the other commands refuse to create a database."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "hookbay", "migrate"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    return env


def make_settings(db_url: str, data_dir: Path, **over: object):  # type: ignore[no-untyped-def]
    from hookbay.settings import Settings

    base = dict(
        data_dir=data_dir, database_url=db_url if not db_url.startswith("sqlite") else "",
        admin_token=ADMIN_TOKEN, worker_poll_seconds=0.2, source_refresh_seconds=0.1,
        log_level="warning", busy_timeout_ms=2000, run_worker="inline",
    )
    if db_url.startswith("sqlite"):
        base["database_url"] = db_url
    base.update(over)
    return Settings(**base)  # type: ignore[arg-type]





@dataclass
class LiveServer:
    url: str
    app: object
    settings: object
    client: httpx.Client

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)

    def create_source(self, **body: object) -> dict:
        body.setdefault("name", "src-" + secrets.token_hex(3))
        body.setdefault("client_id", "acme")
        with self.admin() as c:
            r = c.post("/api/v1/sources", json=body)
            assert r.status_code == 201, r.text
            return r.json()

    def wait_state(self, request_id: str, states: tuple[str, ...] = ("processed", "failed"), timeout: float = 10):
        deadline = time.monotonic() + timeout
        while True:
            r = self.client.get(f"/V1/Requests/{request_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            if r.status_code == 200 and r.json()["state"] in states:
                return r.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"request {request_id} not in {states}: {r.status_code} {r.text}")
            time.sleep(0.05)


class _Server:
    def __init__(self, app: object, port: int) -> None:
        import uvicorn

        from hookbay.ingest.protocol import uvicorn_config

        self.config = uvicorn_config(app, "127.0.0.1", port)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def live_server_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    from hookbay.server.app import HookbayApp

    servers: list[tuple[_Server, httpx.Client]] = []

    def make(db_url: str, **over: object) -> LiveServer:
        port = free_port()
        settings = make_settings(db_url, tmp_path, port=port, **over)
        app = HookbayApp(settings)
        srv = _Server(app, port)
        srv.start()
        url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=url, timeout=15)
        servers.append((srv, client))
        return LiveServer(url=url, app=app, settings=settings, client=client)

    yield make
    for srv, client in servers:
        client.close()
        srv.stop()


@pytest.fixture
def live(db_url: str, live_server_factory) -> LiveServer:  # type: ignore[no-untyped-def]
    return live_server_factory(db_url)
