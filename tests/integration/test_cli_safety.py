"""A CLI that talks to the right hookbay (issue 14): no implicit new database, ingest URLs from the
running server, misspelt settings reported, `doctor`, and CLI and API agreeing. Run as a user runs
it: subprocesses against a real database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

import hookbay
from tests.conftest import ADMIN_TOKEN, cli_migrate, drop_pg_database, free_port, make_pg_database
from tests.integration.test_cli import start_server

FIX_HINTS = ("HOOKBAY_DATA_DIR", "HOOKBAY_DATABASE_URL", "--data-dir", "--database-url")


@pytest.fixture
def fresh_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """Pointed at a database nothing has created yet (SQLite: no file; PostgreSQL: no schema)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("HOOKBAY_") or k == "HOOKBAY_TEST_PG_URL"}
    e.update({"HOOKBAY_DATA_DIR": str(tmp_path / "data"), "HOOKBAY_DATABASE_URL": db_url,
              "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN, "HOOKBAY_LOG_LEVEL": "warning", "HOOKBAY_PORT": str(free_port()),
              "HOOKBAY_SOURCE_CHECK_SECONDS": "0.05"})
    return e


@pytest.fixture
def env(fresh_env: dict[str, str]) -> dict[str, str]:
    return cli_migrate(dict(fresh_env))


def hb(env: dict[str, str], *args: str, rc: int = 0) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == rc, f"rc={p.returncode} {p.stderr}{p.stdout}"
    return p


def _pg(db_url: str) -> sa.Engine:
    return sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool)


def _tables(db_url: str) -> list[str]:
    eng = _pg(db_url)
    try:
        with eng.connect() as c:
            return sa.inspect(c).get_table_names()
    finally:
        eng.dispose()


# --- no implicit database ------------------------------------------------------------------


def test_commands_refuse_to_create_a_database(fresh_env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    commands = [["source", "list"], ["source", "create", "--name", "s", "--client", "acme"], ["token", "list"],
                ["requests"], ["deliveries", "list"], ["purge"], ["worker"], ["source", "show", "s"]]
    for args in commands:
        p = hb(fresh_env, *args, rc=1)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, p.stderr)
        assert all(h in lines[0] for h in FIX_HINTS) and "hookbay migrate" in lines[0]
        if db_url.startswith("sqlite"):
            assert str(tmp_path / "hookbay.db") in lines[0]  # the path it looked at
        else:
            assert db_url.rsplit("/", 1)[1] in lines[0] and "no hookbay schema" in lines[0]
    if db_url.startswith("sqlite"):
        assert not (tmp_path / "hookbay.db").exists() and not (tmp_path / "data").exists()
    else:
        assert _tables(db_url) == []
    hb(fresh_env, "migrate")  # migrate (and serve) create it
    assert orjson.loads(hb(fresh_env, "source", "list", "--json").stdout) == []


def test_data_dir_option_and_default_location(tmp_path: Path) -> None:
    """Without HOOKBAY_DATABASE_URL the database is `hookbay.db` in the data directory; the global
    options point a command elsewhere than the environment does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKBAY_")}
    env.update({"HOOKBAY_DATA_DIR": str(tmp_path / "elsewhere"), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
                "HOOKBAY_SOURCE_CHECK_SECONDS": "0.05"})
    server_dir = tmp_path / "server"
    p = hb(env, "source", "list", rc=1)
    assert str(tmp_path / "elsewhere" / "hookbay.db") in p.stderr
    hb(env, "--data-dir", str(server_dir), "migrate")
    assert (server_dir / "hookbay.db").is_file() and not (tmp_path / "elsewhere").exists()
    made = orjson.loads(hb(env, "--data-dir", str(server_dir), "source", "create", "--name", "a", "--client", "c",
                           "--json").stdout)
    listed = orjson.loads(hb(env, "--database-url", f"sqlite:///{server_dir / 'hookbay.db'}", "source", "list",
                             "--json").stdout)
    assert [s["id"] for s in listed] == [made["id"]]
    hb(env, "source", "list", rc=1)  # the environment's directory is still empty, and still not created
    assert not (tmp_path / "elsewhere").exists()


# --- ingest URLs from the running server ---------------------------------------------------


def test_ingest_urls_come_from_the_running_server(env: dict[str, str], tmp_path: Path) -> None:
    port = env["HOOKBAY_PORT"]
    server = start_server(env, (tmp_path / "serve.log").open("wb"))
    try:
        # a second terminal with another HOST/PORT (or none) still prints URLs that reach the server
        other = env | {"HOOKBAY_PORT": str(free_port()), "HOOKBAY_HOST": "0.0.0.0"}
        src = orjson.loads(hb(other, "source", "create", "--name", "W", "--client", "acme", "--json").stdout)
        assert src["ingest_url"] == f"http://127.0.0.1:{port}/V1/Data/{src['token']}"
        assert httpx.post(src["ingest_url"], json={"a": 1}).status_code == 200
        text = hb(other, "source", "list").stdout
        assert f"http://127.0.0.1:{port}/V1/Data/{src['token']}" in text
        assert f":{other['HOOKBAY_PORT']}/" not in text
        # HOOKBAY_PUBLIC_URL (e.g. behind a proxy) wins over the recorded one
        shown = orjson.loads(hb(other | {"HOOKBAY_PUBLIC_URL": "https://hooks.example.com/"}, "source", "show", "W",
                                "--json").stdout)
        assert shown["ingest_url"] == f"https://hooks.example.com/V1/Data/{src['token']}"
    finally:
        server.terminate()
        server.wait(timeout=20)


# --- misspelt settings ---------------------------------------------------------------------


def test_unknown_settings_are_reported_with_the_closest_name(env: dict[str, str], tmp_path: Path) -> None:
    noisy = env | {"HOOKBAY_PROT": "9000", "HOOKBAY_ADMIN_TOKN": "x", "HOOKBAY_ZZQX": "1",
                   # not settings, but known to hookbay's tools: never reported
                   "HOOKBAY_TEST_PG_URL": "postgresql://x/y", "HOOKBAY_AGENT_STATE_DIR": "/tmp/x",
                   "HOOKBAY_RELAY_TOKEN": "hbr_x", "HOOKBAY_PROVIDER_MC_ACME": "k", "HOOKBAY_STATEFUL_EXAMPLES": "5"}
    p = hb(noisy, "source", "list")  # a warning, not an error
    lines = p.stderr.strip().splitlines()
    assert sorted(lines) == [
        "warning: HOOKBAY_ADMIN_TOKN is not a known setting and is ignored (did you mean HOOKBAY_ADMIN_TOKEN?)",
        "warning: HOOKBAY_PROT is not a known setting and is ignored (did you mean HOOKBAY_PORT?)",
        "warning: HOOKBAY_ZZQX is not a known setting and is ignored",
    ]
    assert hb(env, "source", "list").stderr == ""

    # serve reports them through its log: with JSON logs, one JSON object per variable
    log = tmp_path / "serve.log"
    server = start_server(env | {"HOOKBAY_WORKER_POLL_SECOND": "1", "HOOKBAY_LOG_JSON": "true",
                                 "HOOKBAY_LOG_LEVEL": "info"}, log.open("wb"))
    server.terminate()
    server.wait(timeout=20)
    events = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    found = [e for e in events if e["event"] == "unknown_setting"]
    assert len(found) == 1, log.read_text()
    assert found[0]["name"] == "HOOKBAY_WORKER_POLL_SECOND"
    assert found[0]["did_you_mean"] == "HOOKBAY_WORKER_POLL_SECONDS" and found[0]["level"] == "warning"


# --- --version and doctor ------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKBAY_")} | {"HOOKBAY_DATA_DIR": str(tmp_path)}
    assert hb(env, "--version").stdout == f"hookbay {hookbay.__version__}\n"
    assert not list(tmp_path.iterdir())


def _checks(p: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in p.stdout.strip().splitlines():
        status, rest = line.split(None, 1)
        assert status in ("ok", "warn", "fail"), line
        out.setdefault(rest.split(":", 1)[0], []).append(line)
    return out


def test_doctor_healthy_and_broken(env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    good = _checks(hb(env, "doctor"))
    pg = {"partitions"} if not db_url.startswith("sqlite") else set()  # `hookbay migrate` made today's partition
    assert set(good) == {"settings", "database", "migrations", "clock", "smtp", "disk"} | pg
    assert all(line.startswith("ok") for lines in good.values() for line in lines), good
    if not db_url.startswith("sqlite"):
        assert "agrees with the database server's" in good["clock"][0]

    # nothing there: fails, says where it looked and how to fix it; creates nothing
    if db_url.startswith("sqlite"):
        empty = tmp_path / "empty" / "hookbay.db"
        p = hb(env | {"HOOKBAY_DATABASE_URL": f"sqlite:///{empty}"}, "doctor", rc=1)
        assert _checks(p)["database"][0].startswith("fail") and str(empty) in p.stdout
        assert not (tmp_path / "empty").exists()
    else:
        name, empty_url = make_pg_database()
        try:
            p = hb(env | {"HOOKBAY_DATABASE_URL": empty_url}, "doctor", rc=1)
            assert _checks(p)["migrations"][0].startswith("fail") and name in p.stdout
            assert _tables(empty_url) == []
        finally:
            drop_pg_database(name)
    assert "hookbay migrate" in p.stdout and p.stderr.strip().count("\n") == 0 and "failed" in p.stderr

    # an SMTP server that does not answer, a misspelt setting, a schema behind the code
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, not listening: connection refused
        p = hb(env | {"HOOKBAY_SMTP_HOST": "127.0.0.1", "HOOKBAY_SMTP_PORT": str(closed), "HOOKBAY_SMTP_PROT": "1"},
               "doctor", rc=1)
    c = _checks(p)
    assert c["smtp"][0].startswith("fail") and f"127.0.0.1:{closed}" in c["smtp"][0] and "HOOKBAY_SMTP_PORT" in p.stdout
    assert c["settings"][0].startswith("warn") and "rename it to HOOKBAY_SMTP_PORT" in c["settings"][0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        ok = _checks(hb(env | {"HOOKBAY_SMTP_HOST": "127.0.0.1", "HOOKBAY_SMTP_PORT": str(s.getsockname()[1])},
                        "doctor"))
    assert ok["smtp"][0].startswith("ok")

    eng = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0004'"))
    eng.dispose()
    c = _checks(hb(env, "doctor", rc=1))
    assert c["migrations"][0].startswith("fail") and "at 0004" in c["migrations"][0]
    assert "run `hookbay migrate`" in c["migrations"][0]


# --- CLI and API agree ---------------------------------------------------------------------


def test_secret_counts_agree_with_the_api(live, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = cli_migrate({k: v for k, v in os.environ.items() if not k.startswith("HOOKBAY_")} | {
        "HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "HOOKBAY_SOURCE_CHECK_SECONDS": "0.05"})
    src = orjson.loads(hb(env, "source", "create", "--name", "GH", "--client", "acme", "--signature", "github",
                          "--json").stdout)
    hb(env, "source", "rotate", "GH", "--grace", "1h")
    with live.admin() as c:
        api = c.get(f"/api/v1/sources/{src['id']}").json()["signing_secrets"]
        api_list = {s["id"]: s["signing_secrets"] for s in c.get("/api/v1/sources").json()}
        patched = c.patch(f"/api/v1/sources/{src['id']}", json={"enabled": True}).json()["signing_secrets"]
    assert api == api_list[src["id"]] == patched == 2
    assert orjson.loads(hb(env, "source", "show", "GH", "--json").stdout)["signing_secrets"] == 2
    assert orjson.loads(hb(env, "source", "list", "--json").stdout)[0]["signing_secrets"] == 2
    assert "2 active signing secret(s)" in hb(env, "source", "show", src["id"]).stdout
    assert "secrets=2" in hb(env, "source", "list").stdout
    upd = orjson.loads(hb(env, "source", "update", "GH", "--rate", "5", "--json").stdout)
    assert upd["signing_secrets"] == 2


def test_a_name_shared_by_two_clients_is_ambiguous(live, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = cli_migrate({k: v for k, v in os.environ.items() if not k.startswith("HOOKBAY_")} | {
        "HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "HOOKBAY_SOURCE_CHECK_SECONDS": "0.05"})
    acme = orjson.loads(hb(env, "source", "create", "--name", "Shop", "--client", "acme", "--json").stdout)
    globex = orjson.loads(hb(env, "source", "create", "--name", "Shop", "--client", "globex", "--json").stdout)
    for args in (["source", "show", "Shop"], ["source", "delete", "Shop"], ["source", "update", "Shop", "--rate", "1"],
                 ["source", "relay-token", "list", "Shop"], ["deliveries", "list", "--source", "Shop"],
                 ["requests", "--source", "Shop"]):
        p = hb(env, *args, rc=1)
        assert p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
        assert "ambiguous: use the id or --client" in p.stderr, (args, p.stderr)
    assert orjson.loads(hb(env, "source", "show", "Shop", "--client", "globex", "--json").stdout)["id"] == globex["id"]
    hb(env, "source", "update", "Shop", "--client", "acme", "--rate", "3")
    hb(env, "deliveries", "list", "--source", "Shop", "--client", "acme")
    hb(env, "source", "delete", "Shop", "--client", "globex")
    assert orjson.loads(hb(env, "source", "show", "Shop", "--json").stdout)["config"]["rate"] == 3  # one left
    assert orjson.loads(hb(env, "source", "show", "Shop", "--json").stdout)["id"] == acme["id"]
    hb(env, "source", "create", "--name", "Shop", "--client", "globex")
    with live.admin() as c:
        r = c.get("/api/v1/sources/Shop")
    assert r.status_code == 400 and r.json()["error"]["code"] == "ambiguous"
    assert r.json()["error"]["detail"] == {"clients": ["acme", "globex"]}


def test_bulk_operations_need_a_filter_or_all(live, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with live.admin() as c:
        for path in ("/api/v1/deliveries/retry", "/api/v1/replay"):
            for body in ({}, {"all": False}, {"dry_run": True, "limit": 5}):
                r = c.post(path, json=body)
                assert r.status_code == 400 and '"all": true' in r.json()["error"]["message"], (path, body, r.text)
        assert c.post("/api/v1/deliveries/retry", json={"all": True}).json() == {"count": 0, "ids": []}
        assert c.post("/api/v1/replay", json={"all": True, "dry_run": True}).json()["count"] == 0
    env = cli_migrate({k: v for k, v in os.environ.items() if not k.startswith("HOOKBAY_")} | {
        "HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url})
    assert "--all" in hb(env, "deliveries", "retry", rc=2).stderr
    assert "not found" in hb(env, "deliveries", "retry", "del_nope", rc=1).stderr
    assert hb(env, "deliveries", "retry", "--all").stdout == "queued 0 deliveries again\n"
