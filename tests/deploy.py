"""Helpers for the deployment tests: a self-signed certificate, `hookbay serve` as a user runs it
(a subprocess), and Debian's nginx started as a foreground child with its own prefix."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, cli_migrate

ROOT = Path(__file__).resolve().parent.parent


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A certificate for ``localhost`` and 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def server_env(db_url: str, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HOOKBAY_DATA_DIR": str(data_dir), "HOOKBAY_PORT": str(port), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
                "HOOKBAY_LOG_LEVEL": "info", "HOOKBAY_WORKER_POLL_SECONDS": "0.2", "HOOKBAY_DATABASE_URL": db_url,
                "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return cli_migrate(env)


def start_serve(env: dict[str, str], log: Path, *args: str, health: str | None = None,
                verify: ssl.SSLContext | bool = False) -> subprocess.Popen[bytes]:
    """``hookbay serve`` in a subprocess, returned once ``health`` (default its /healthz) answers."""
    proc = subprocess.Popen([sys.executable, "-m", "hookbay", "serve", *args], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = health or f"http://127.0.0.1:{env['HOOKBAY_PORT']}/healthz"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
    return proc.returncode


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("nginx is required in CI (scripts/test installs Debian's package)")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def nginx_site(upstreams: list[int], http_port: int, https_port: int, cert: Path, key: Path) -> str:
    """deploy/nginx/hookbay.conf with only its ``# test:`` lines pointed at this test's ports and files."""
    text = (ROOT / "deploy" / "nginx" / "hookbay.conf").read_text()
    lines = {
        "upstream": "\n".join(f"    server 127.0.0.1:{p};" for p in upstreams),
        "http": f"    listen 127.0.0.1:{http_port};",
        "https": f"    listen 127.0.0.1:{https_port} ssl http2;",
        "cert": f"    ssl_certificate     {cert};",
        "key": f"    ssl_certificate_key {key};",
    }
    out = []
    for line in text.splitlines():
        m = re.search(r"# test: (\w+)", line)
        out.append(lines[m.group(1)] if m else line)
    return "\n".join(out) + "\n"


def start_nginx(prefix: Path, site: str, port: int) -> subprocess.Popen[bytes]:
    """nginx in the foreground with everything (pid, logs, temp files) under ``prefix``."""
    for d in ("logs", "tmp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    (prefix / "hookbay.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""  # its workers keep to the test's files
    (prefix / "nginx.conf").write_text(f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$remote_addr $upstream_addr $status';
    access_log {prefix}/logs/access.log upstream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/hookbay.conf;
}}
""")
    binary = nginx_binary()
    check = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=(prefix / "logs" / "stderr.log").open("wb"))
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1)
            return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError((prefix / "logs" / "stderr.log").read_text() + (prefix / "logs" / "error.log").read_text())
        time.sleep(0.05)
