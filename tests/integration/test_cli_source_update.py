"""`hookbay source update` with an option whose value is zero or false, run as a user runs it: the
option is applied, not dropped as if nothing had been given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, cli_migrate


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
              "HOOKBAY_LOG_LEVEL": "warning"})
    return cli_migrate(e)


def hb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def config(env: dict[str, str], *args: str) -> dict[str, Any]:
    p = hb(env, *args, "--json")
    assert p.returncode == 0, p.stderr + p.stdout
    return dict(orjson.loads(p.stdout)["config"])


def test_zero_and_false_values_are_applied(env: dict[str, str]) -> None:
    before = config(env, "source", "create", "--name", "Shop", "--client", "acme", "--rate", "5", "--burst", "10",
                    "--retention-days", "30", "--allow-private-destinations", "--relay")
    assert before["allow_private_destinations"] is True and before["rate"] == 5.0

    closed = config(env, "source", "update", "Shop", "--no-allow-private-destinations")
    assert closed == {**before, "allow_private_destinations": False}
    unlimited = config(env, "source", "update", "Shop", "--rate", "0", "--burst", "0")
    assert unlimited == {**closed, "rate": None, "burst": None}
    kept = config(env, "source", "update", "Shop", "--retention-days", "0", "--no-relay")
    assert kept == {**unlimited, "retention_days": None, "relay": False}
    assert config(env, "source", "show", "Shop") == kept


def test_an_invalid_zero_is_refused_not_ignored(env: dict[str, str]) -> None:
    config(env, "source", "create", "--name", "Hooks", "--client", "acme", "--signature", "github")
    p = hb(env, "source", "update", "Hooks", "--tolerance", "0")
    assert p.returncode == 2 and "tolerance" in p.stderr and "Traceback" not in p.stderr
    assert config(env, "source", "show", "Hooks")["signature"]["tolerance_s"] == 300
