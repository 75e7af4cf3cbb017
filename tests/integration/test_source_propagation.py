"""A source change made by another process (the real CLI) reaches a running server before the command
returns: no 404 right after `source create`, a disabled source refuses at once, a rotated secret works
at once. The server's fallback poll is set to 5 s so only the prompt paths (LISTEN/NOTIFY, data_version,
the unknown-token check) can make these pass."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, cli_migrate


@pytest.fixture
def server(live_server_factory, db_url):  # type: ignore[no-untyped-def]
    return live_server_factory(db_url, source_refresh_seconds=5)


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
              "HOOKBAY_LOG_LEVEL": "warning"})
    return cli_migrate(e)


def hb(env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    p = subprocess.run([sys.executable, "-m", "hookbay", *args, "--json"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr + p.stdout
    return orjson.loads(p.stdout)  # type: ignore[no-any-return]


def test_created_source_answers_at_once_every_time(server, env) -> None:  # type: ignore[no-untyped-def]
    statuses = []
    for i in range(50):
        src = hb(env, "source", "create", "--name", f"s{i}", "--client", "acme")
        statuses.append(server.client.post(f"/V1/Data/{src['token']}", json={"n": i}).status_code)
    assert statuses == [200] * 50


def test_disable_and_rotate_take_effect_before_the_cli_returns(server, env) -> None:  # type: ignore[no-untyped-def]
    src = hb(env, "source", "create", "--name", "shop", "--client", "acme", "--signature", "github",
             "--secret", "old-secret-123")
    url = f"/V1/Data/{src['token']}"
    body = b'{"id":1}'

    def signed(secret: str) -> dict[str, str]:
        return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}

    assert server.client.post(url, content=body, headers=signed("old-secret-123")).status_code == 200
    hb(env, "source", "rotate", src["id"], "--secret", "new-secret-456", "--grace", "0")
    assert server.client.post(url, content=body, headers=signed("new-secret-456")).status_code == 200
    assert server.client.post(url, content=body, headers=signed("old-secret-123")).status_code == 401

    hb(env, "source", "update", src["id"], "--disable")
    assert server.client.post(url, content=body, headers=signed("new-secret-456")).status_code == 404
    hb(env, "source", "update", src["id"], "--enable")
    assert server.client.post(url, content=body, headers=signed("new-secret-456")).status_code == 200
