"""deploy/systemd: both units pass `systemd-analyze verify` without a warning and are hardened
(`systemd-analyze security` exposure, and the directives the guide promises)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("hookbay.service", "hookbay-worker.service")


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("systemd-analyze is required in CI (scripts/test installs Debian's systemd package)")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def _installed_copy(tmp_path: Path, name: str) -> Path:
    """The unit as shipped, its ExecStart pointed at this interpreter's `hookbay` (verify checks
    that the program exists and is executable)."""
    hookbay = Path(sys.executable).parent / "hookbay"
    if not hookbay.exists():
        hookbay = tmp_path / "hookbay"
        hookbay.write_text(f"#!/bin/sh\nexec {sys.executable} -m hookbay \"$@\"\n")
        hookbay.chmod(0o755)
    text = (ROOT / "deploy" / "systemd" / name).read_text()
    assert "/opt/hookbay/bin/hookbay" in text
    out = tmp_path / name
    out.write_text(text.replace("/opt/hookbay/bin/hookbay", str(hookbay)))
    return out


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_without_warnings(name: str, tmp_path: Path) -> None:
    unit = _installed_copy(tmp_path, name)
    p = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(), p.stdout + p.stderr


def test_verify_would_catch_a_misspelt_hardening_key(tmp_path: Path) -> None:
    unit = _installed_copy(tmp_path, UNITS[0])
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    p = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in p.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_hardened(name: str, tmp_path: Path) -> None:
    unit = _installed_copy(tmp_path, name)
    text = unit.read_text()
    for directive in ("DynamicUser=yes", "User=hookbay", "ProtectSystem=strict", "ReadWritePaths=/var/lib/hookbay",
                      "StateDirectory=hookbay", "NoNewPrivileges=yes", "Restart=always", "CapabilityBoundingSet=\n"):
        assert directive in text, directive
    p = subprocess.run([_analyze(), "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, p.stdout[-2000:] + p.stderr
    assert float(m.group(1)) <= 2.0, p.stdout[-3000:]
