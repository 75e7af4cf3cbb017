"""Every CLI error is one clear line on stderr and a non-zero exit, never a traceback: each command of
the Typer app (enumerated, so new commands are covered) is run as a real subprocess with bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer

from hookbay.cli.app import app
from tests.conftest import ADMIN_TOKEN, free_port


def _commands() -> list[tuple[list[str], Any]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        subs = getattr(cmd, "commands", None)
        if not subs:
            yield path, cmd
            return
        if path and getattr(cmd, "invoke_without_command", False):
            yield path, cmd
        for name, sub in subs.items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


COMMANDS = _commands()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_DATABASE_URL": db_url, "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
              "HOOKBAY_LOG_LEVEL": "warning", "HOOKBAY_PORT": str(free_port())})
    e.pop("HOOKBAY_DEBUG", None)
    assert _run(e, ["migrate"]).returncode == 0  # the parallel runs below must not race to create the schema
    return e


def _run(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookbay", *args], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _assert_clean_failures(env: dict[str, str], invocations: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    assert invocations
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda a: _run(env, a), invocations))
    bad = [f"{' '.join(a)}: rc={p.returncode} stderr={p.stderr!r} stdout={p.stdout[-300:]!r}"
           for a, p in zip(invocations, results, strict=True)
           if p.returncode == 0 or not p.stderr.strip() or "Traceback" in p.stderr + p.stdout
           or len(p.stderr.strip().splitlines()) > 3]
    assert not bad, "\n".join(bad)
    return results


def _param(cmd: Any, name: str) -> Any:
    return next((p for p in cmd.params if p.name == name), None)


def test_every_command_rejects_an_unknown_option(env: dict[str, str]) -> None:
    results = _assert_clean_failures(env, [[*path, "--no-such-option"] for path, _ in COMMANDS])
    assert all(len(p.stderr.strip().splitlines()) == 1 for p in results)


def test_every_command_given_unknown_ids_fails_cleanly(env: dict[str, str]) -> None:
    invocations = []
    for path, cmd in COMMANDS:
        args = [p for p in cmd.params if type(p).__name__.endswith("Argument")]
        if not args:
            continue
        extra = ["--yes"] if _param(cmd, "yes") else []
        invocations.append([*path, *(f"nope_{p.name}" for p in args), *extra])
    results = _assert_clean_failures(env, invocations)
    assert all(len(p.stderr.strip().splitlines()) == 1 for p in results)


def test_every_time_option_says_what_it_accepts(env: dict[str, str]) -> None:
    invocations = []
    for path, cmd in COMMANDS:
        for flag in ("since", "until"):
            if _param(cmd, flag):
                extra = ["--failed"] if _param(cmd, "failed") else []
                invocations.append([*path, f"--{flag}", "yesterday", *extra])
    for p in _assert_clean_failures(env, invocations):
        assert "ISO-8601" in p.stderr and "15m" in p.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_bad_settings_and_input_are_one_line(env: dict[str, str]) -> None:
    store_commands = [["source", "list"], ["requests"], ["migrate"], ["worker"], ["serve"], ["keys", "rotate"]]
    bad_key = env | {"HOOKBAY_ENCRYPTION_KEY": "k1:c2hvcnQ="}
    for p in _assert_clean_failures(bad_key, store_commands):
        assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "HOOKBAY_ENCRYPTION_KEY" in p.stderr
        assert "c2hvcnQ" not in p.stderr  # the key material is never echoed

    no_db = env | {"HOOKBAY_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/none"}
    for p in _assert_clean_failures(no_db, [c for c in store_commands if c != ["serve"]]):
        assert "database is unavailable" in p.stderr

    bad_port = env | {"HOOKBAY_PORT": "eighty"}
    for p in _assert_clean_failures(bad_port, [["source", "list"], ["serve"]]):
        assert "HOOKBAY_PORT" in p.stderr

    short = _assert_clean_failures(env, [["source", "create", "--name", "s", "--client", "c",
                                          "--signature", "github", "--secret", "short"]])[0]
    line = short.stderr.strip()
    assert len(line.splitlines()) == 1 and "--secret" in line and "at least 8 characters" in line
    assert "guess" in line and "pydantic" not in line
