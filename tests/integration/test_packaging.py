"""Packaging: `python -m build` makes an sdist and a wheel (the wheel built from the sdist, so the
sdist is complete); the wheel installed into a fresh virtualenv runs `hookbay --version`,
`hookbay migrate` and `hookbay serve`, and serves the console's templates and static files.

The fresh virtualenv gets the wheel with ``--no-deps`` and sees the test interpreter's installed
dependencies through a path line (not that directory's own ``.pth`` files, so an editable hookbay
there stays invisible): the test runs offline in seconds and still imports hookbay only from the
wheel, which it checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, free_port

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache",
                                ".ruff_cache", ".hypothesis", "build", "dist", "data", "results")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel of this checkout (copied first: the build writes next to its sources)."""
    base = tmp_path_factory.mktemp("pkg")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    out = base / "dist"
    p = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(src)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out


def _console_files() -> set[str]:
    pkg = ROOT / "hookbay" / "console"
    return {str(f.relative_to(ROOT)) for d in ("templates", "static") for f in (pkg / d).iterdir() if f.is_file()}


def test_sdist_and_wheel_carry_everything_the_server_reads(dist: Path) -> None:
    wheel = next(dist.glob("hookbay-*.whl"))
    sdist = next(dist.glob("hookbay-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {str(f.relative_to(ROOT)) for f in (ROOT / "hookbay" / "migrations" / "versions").glob("*.py")}
    assert _console_files() | migrations | {"hookbay/migrations/env.py"} <= names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    assert {"LICENSE", "pyproject.toml", "hookbay/console/static/console.css"} <= members


def test_wheel_installs_and_runs_in_a_fresh_virtualenv(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    # the test interpreter's dependencies, as a plain path (its .pth files, an editable hookbay's among them, are not run)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "hookbay-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    wheel = next(dist.glob("hookbay-*.whl"))
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                        "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    hookbay = env_dir / "bin" / "hookbay"
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKBAY_", "PYTHON"))}
    env.update({"HOOKBAY_DATA_DIR": str(data), "HOOKBAY_PORT": str(port), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
                "HOOKBAY_LOG_LEVEL": "warning"})
    run = {"env": env, "cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120}

    where = subprocess.run([str(py), "-c", "import hookbay; print(hookbay.__file__)"], **run)  # type: ignore[call-overload]
    assert where.stdout.strip().startswith(str(purelib)), where.stdout + where.stderr
    version = subprocess.run([str(hookbay), "--version"], **run)  # type: ignore[call-overload]
    assert version.returncode == 0 and re.fullmatch(r"hookbay \d+\.\d+\.\d+\S*\n", version.stdout), version
    migrated = subprocess.run([str(hookbay), "migrate"], **run)  # type: ignore[call-overload]
    assert migrated.returncode == 0 and "schema is up to date" in migrated.stdout, migrated.stderr
    assert (data / "hookbay.db").exists()

    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(hookbay), "serve"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        login = httpx.get(f"{base}/ui/login", timeout=10)
        assert login.status_code == 200 and "<form" in login.text  # a template rendered from the wheel
        for name in ("console.css", "console.js"):
            static = httpx.get(f"{base}/ui/static/{name}", timeout=10)
            assert static.status_code == 200 and static.content == (ROOT / "hookbay/console/static" / name).read_bytes()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10) as c:
            src = c.post("/api/v1/sources", json={"name": "pkg", "client_id": "acme"}).json()
            r = c.post(src["ingest_url"], json={"email": "a@b.co"})
            assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
