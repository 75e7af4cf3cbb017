"""HTTPS: `serve --tls-cert/--tls-key` directly, and Debian's nginx in front with deploy/nginx/hookbay.conf."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import ADMIN_TOKEN, free_port
from tests.deploy import nginx_site, self_signed, server_env, start_nginx, start_serve, stop

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLEAN = (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it drained on; systemd counts both as clean


def _source(base: str, verify: ssl.SSLContext | bool, **body: object) -> dict:
    body.setdefault("name", "tls")
    body.setdefault("client_id", "acme")
    r = httpx.post(f"{base}/api/v1/sources", json=body, headers=AUTH, verify=verify, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def _processed(base: str, request_id: str, verify: ssl.SSLContext | bool) -> dict:
    for _ in range(200):
        r = httpx.get(f"{base}/V1/Requests/{request_id}", headers=AUTH, verify=verify, timeout=10)
        if r.json().get("state") in ("processed", "failed"):
            break
        time.sleep(0.05)
    return r.json()


def test_serve_answers_https_with_the_given_certificate(db_url: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    port = free_port()
    env = server_env(db_url, tmp_path, port)
    base = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=cert)
    proc = start_serve(env, tmp_path / "serve.log", "--tls-cert", str(cert), "--tls-key", str(key),
                       health=f"{base}/healthz", verify=trust)
    try:
        src = _source(base, trust)
        assert src["ingest_url"].startswith(f"{base}/"), src["ingest_url"]  # links name the scheme served
        r = httpx.post(src["ingest_url"], json={"email": "a@b.co"}, verify=trust, timeout=10)
        assert r.status_code == 200, r.text
        assert _processed(base, r.json()["request_id"], trust)["state"] == "processed"
        with httpx.Client(verify=trust, timeout=10) as c:  # keep-alive over TLS: several requests, one connection
            for n in range(20):
                assert c.post(src["ingest_url"], json={"n": n}).status_code == 200
            early = c.post(src["ingest_url"], content=b"x" * (2 * 1024 * 1024))  # answered before the body is read
            assert early.status_code == 413 and early.json()["error"]["code"] == "payload_too_large"
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
            plain_ok = True
        except httpx.HTTPError:
            plain_ok = False
        assert not plain_ok, "plain HTTP must not be answered on the HTTPS port"
    finally:
        assert stop(proc) in CLEAN


def test_serve_refuses_unusable_tls_files_in_one_line(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "a")
    other_cert, _ = self_signed(tmp_path / "b", "other")
    env = server_env(f"sqlite:///{tmp_path / 'hookbay.db'}", tmp_path, free_port())
    cases = [
        (["--tls-cert", str(cert)], "--tls-key (HOOKBAY_TLS_KEY) is not set"),
        (["--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(key)], "nope.crt: no such file"),
        (["--tls-cert", str(other_cert), "--tls-key", str(key)], "matching private key"),
    ]
    for args, expected in cases:
        p = subprocess.run([sys.executable, "-m", "hookbay", "serve", *args], env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, p.stderr)
        assert "Traceback" not in p.stderr + p.stdout


def test_nginx_terminates_tls_and_hookbay_sees_the_real_client(db_url: str, tmp_path: Path) -> None:
    """deploy/nginx/hookbay.conf as shipped, in front of a live `serve`: HTTPS through it is stored
    once; the source's IP allowlist sees the client's address, not nginx's; limits answer in
    hookbay's JSON shape; nginx's own answer when hookbay is down is a JSON 503 with Retry-After."""
    cert, key = self_signed(tmp_path / "tls")
    port, http_port, https_port = free_port(), free_port(), free_port()
    env = server_env(db_url, tmp_path, port, HOOKBAY_TRUSTED_PROXIES="127.0.0.1/32",
                     HOOKBAY_PUBLIC_URL=f"https://localhost:{https_port}")
    hb = start_serve(env, tmp_path / "serve.log")
    ngx = start_nginx(tmp_path / "nginx", nginx_site([port], http_port, https_port, cert, key), https_port)
    base = f"https://localhost:{https_port}"
    verify = ssl.create_default_context(cafile=cert)
    try:
        src = _source(base, verify, config={"allow_ips": ["127.0.0.2/32"]})
        url = src["ingest_url"]
        assert url.startswith(base)
        # the client at 127.0.0.2 is let in; nginx itself connects from 127.0.0.1, which the allowlist refuses
        with httpx.Client(verify=verify, timeout=10, transport=httpx.HTTPTransport(
                local_address="127.0.0.2", verify=verify)) as allowed:
            r = allowed.post(url, json={"email": "a@b.co"}, headers={"X-Forwarded-For": "127.0.0.1"})
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
            big = allowed.post(url, content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                               headers={"Content-Type": "application/json"})
            assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"  # hookbay's, per source
            huge = allowed.post(url, content=b"x" * (11 * 1024 * 1024))
            assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"  # nginx's cap
        denied = httpx.post(url, json={"email": "c@d.co"}, verify=verify, timeout=10,
                            headers={"X-Forwarded-For": "127.0.0.2"})  # a claimed address is not believed
        assert denied.status_code == 403, denied.text
        detail = httpx.get(f"{base}/api/v1/requests/{rid}", headers=AUTH, verify=verify, timeout=10).json()
        assert detail["peer"] == "127.0.0.2", detail
        assert _processed(base, rid, verify)["state"] == "processed"
        plain = httpx.post(f"http://127.0.0.1:{http_port}{url.split(str(https_port), 1)[1]}", json={}, timeout=10)
        assert plain.status_code == 308 and plain.headers["location"].startswith("https://")
        relay_wait = (tmp_path / "nginx" / "hookbay.conf").read_text()
        assert "proxy_read_timeout 75s" in relay_wait  # above the relay's longest long-poll (60 s)
    finally:
        assert stop(hb) in CLEAN
    try:
        down = httpx.post(url, json={}, verify=verify, timeout=10)
        assert down.status_code == 503 and down.headers["retry-after"] == "5"
        assert orjson.loads(down.content)["error"]["code"] == "storage_unavailable"
    finally:
        stop(ngx)


def test_two_web_machines_and_a_worker_behind_nginx(pg_ok: None, tmp_path: Path) -> None:
    """Several machines on one box: two `serve --no-worker` and one `hookbay worker` on one
    PostgreSQL, nginx balancing between the two: every request is stored and processed once, and
    the IP allowlist sees the client's address on both."""
    from tests.conftest import drop_pg_database, make_pg_database

    name, pg = make_pg_database()
    cert, key = self_signed(tmp_path / "tls")
    ports = [free_port(), free_port()]
    http_port, https_port = free_port(), free_port()
    verify = ssl.create_default_context(cafile=cert)
    procs: list[subprocess.Popen[bytes]] = []
    ngx = None
    try:
        for i, port in enumerate(ports):
            env = server_env(pg, tmp_path / f"web{i}", port, HOOKBAY_TRUSTED_PROXIES="127.0.0.1/32",
                             HOOKBAY_PUBLIC_URL=f"https://localhost:{https_port}")
            procs.append(start_serve(env, tmp_path / f"web{i}.log", "--no-worker"))
        worker_env = server_env(pg, tmp_path / "worker", free_port())
        procs.append(subprocess.Popen([sys.executable, "-m", "hookbay", "worker"], env=worker_env,
                                      stdout=(tmp_path / "worker.log").open("wb"), stderr=subprocess.STDOUT))
        ngx = start_nginx(tmp_path / "nginx", nginx_site(ports, http_port, https_port, cert, key), https_port)
        base = f"https://localhost:{https_port}"
        url = _source(base, verify, config={"allow_ips": ["127.0.0.2/32"]})["ingest_url"]
        sent: dict[str, int] = {}
        with httpx.Client(verify=verify, timeout=10, transport=httpx.HTTPTransport(
                local_address="127.0.0.2", verify=verify)) as c:
            for n in range(60):
                r = c.post(url, json={"n": n, "email": f"u{n}@example.com"}, headers={"Connection": "close"})
                assert r.status_code == 200, r.text
                sent[r.json()["request_id"]] = n
        assert httpx.post(url, json={}, verify=verify, timeout=10).status_code == 403  # nginx's own address
        import psycopg

        deadline = time.monotonic() + 60
        with psycopg.connect(pg, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM jobs").fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "jobs left unprocessed"
                time.sleep(0.2)
            rows = conn.execute("SELECT id, state, peer FROM requests WHERE verdict = 'accepted'").fetchall()
            recs = dict(conn.execute("SELECT request_id, count(*) FROM records GROUP BY request_id").fetchall())
        assert {r[0] for r in rows} == set(sent)
        assert all(r[1] == "processed" and r[2] == "127.0.0.2" and recs.get(r[0]) == 1 for r in rows), rows
        served = [(tmp_path / "nginx" / "logs" / "access.log").read_text().count(f"127.0.0.1:{p}") for p in ports]
        assert all(n >= 10 for n in served), served  # nginx balanced between the two
    finally:
        if ngx is not None:
            stop(ngx)
        for p in procs:
            stop(p)
        drop_pg_database(name)


def test_processes_serve_https_too(pg_ok: None, tmp_path: Path) -> None:
    """`--processes 2 --tls-cert --tls-key`: every ingest process answers HTTPS on the shared port."""
    from tests.conftest import drop_pg_database, make_pg_database

    name, pg = make_pg_database()
    cert, key = self_signed(tmp_path / "tls")
    port = free_port()
    trust = ssl.create_default_context(cafile=cert)
    base = f"https://127.0.0.1:{port}"
    proc = start_serve(server_env(pg, tmp_path, port), tmp_path / "serve.log", "--processes", "2",
                       "--tls-cert", str(cert), "--tls-key", str(key), health=f"{base}/healthz", verify=trust)
    try:
        url = _source(base, trust)["ingest_url"]
        for n in range(30):  # a new connection each time: both processes take some
            r = httpx.post(url, json={"n": n}, verify=trust, timeout=10, headers={"Connection": "close"})
            assert r.status_code == 200, r.text
        log = (tmp_path / "serve.log").read_text()
        assert log.count('"ingest_process_started"') == 2
    finally:
        assert stop(proc) == 0
        drop_pg_database(name)
