"""Issue #19 row 4, end to end: acknowledged requests survive a power-loss-like failure on SQLite.

What it models: the disk keeps a file's content as of its last ``fdatasync``/``fsync`` and nothing
written after it. An ``LD_PRELOAD`` shim (C, compiled here with gcc) wraps both calls in the server:
after the real sync returns it copies the synced file (database or WAL) aside, under a lock so
copies land in sync order. The test then kills the server with SIGKILL, puts back each file's
last-synced copy (a file never synced is lost, the ``-shm`` index is dropped: SQLite rebuilds it
from the WAL), restarts the server and checks that every request answered 2xx is in the database.
A control run whose connections say ``PRAGMA synchronous=NORMAL`` (issue #19's planted bug) must
lose acknowledged requests under the same failure, which shows the model can see the difference.

What it does not model: torn or reordered writes inside an unsynced region (everything unsynced
is dropped, the harshest ordering-preserving case), lost directory entries (the ``fsync`` of the
directory SQLite issues when it creates the WAL is not watched), a disk that lies about its
flushes, and writes made between a sync and its copy (they could only make the model kinder: SQLite
lets one connection at a time append to the WAL, and a commit's sync happens before it lets go).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import free_port
from tests.integration.test_crash import _env, _start

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* After a real fdatasync/fsync of a file directly in $SYNCED_WATCH, copy it to $SYNCED_DIR. */
static void synced(int fd) {
    const char *watch = getenv("SYNCED_WATCH"), *dir = getenv("SYNCED_DIR");
    char link[64], path[PATH_MAX], out[PATH_MAX], tmp[PATH_MAX], buf[65536];
    if (!watch || !dir) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    size_t w = strlen(watch);
    if (strncmp(path, watch, w) != 0 || path[w] != '/' || strchr(path + w + 1, '/')) return;
    snprintf(out, sizeof out, "%s/%s", dir, path + w + 1);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", out, (int)getpid());
    int o = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (o < 0) abort();
    off_t at = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, sizeof buf, at);
        if (r < 0) abort();
        if (r == 0) break;
        if (write(o, buf, (size_t)r) != r) abort();
        at += r;
    }
    close(o);
    if (rename(tmp, out) != 0) abort();
}

static int wrapped(int fd, const char *name) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    char lockpath[PATH_MAX];
    const char *dir = getenv("SYNCED_DIR");
    int lock = -1;
    if (dir) {
        snprintf(lockpath, sizeof lockpath, "%s/.lock", dir);
        lock = open(lockpath, O_RDWR | O_CREAT, 0600);
        if (lock >= 0) flock(lock, LOCK_EX);
    }
    int rc = real(fd);
    if (rc == 0) synced(fd);
    if (lock >= 0) close(lock);
    return rc;
}

int fdatasync(int fd) { return wrapped(fd, "fdatasync"); }
int fsync(int fd) { return wrapped(fd, "fsync"); }
"""

# The control: every SQLite connection of the server runs synchronous=NORMAL instead of FULL.
NORMAL_LAUNCHER = textwrap.dedent("""
    import sqlite3, sqlite3.dbapi2, sys

    def normal(sql):
        return sql.replace("synchronous=FULL", "synchronous=NORMAL")

    class Cursor(sqlite3.Cursor):
        def execute(self, sql, *a):
            return super().execute(normal(sql), *a)

    class Connection(sqlite3.Connection):
        def cursor(self, factory=Cursor):
            return super().cursor(factory)

        def execute(self, sql, *a):
            return super().execute(normal(sql), *a)

    connect = sqlite3.dbapi2.connect
    sqlite3.dbapi2.connect = lambda *a, **kw: connect(*a, factory=Connection, **kw)
    sys.argv[0] = "hookbay"
    from hookbay.cli.app import main
    main()
""")

DB = "hookbay.db"


def _shim(tmp: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fsync shim")
    src, lib = tmp / "synced.c", tmp / "synced.so"
    src.write_text(SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(src), "-ldl"], check=True)
    return lib


def _send(url: str, n: int) -> dict[bytes, str]:
    """``n`` distinct bodies from 8 threads (so several share a group commit); the 2xx ones."""
    acked: dict[bytes, str] = {}
    lock = threading.Lock()
    todo = list(range(n))

    def run() -> None:
        with httpx.Client(timeout=10) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                body = orjson.dumps({"n": i, "pad": "x" * (i % 300)})
                r = c.post(url, content=body, headers={"Content-Type": "application/json"})
                if 200 <= r.status_code < 300:
                    with lock:
                        acked[body] = r.json()["request_id"]

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked


def _power_loss(data: Path, synced: Path) -> None:
    """The disk after the cut: each file as of its last sync; an unsynced file is gone."""
    for name in (DB, DB + "-wal"):
        if (synced / name).exists():
            shutil.copyfile(synced / name, data / name)
        else:
            (data / name).unlink(missing_ok=True)
    (data / (DB + "-shm")).unlink(missing_ok=True)


def _lost_after_power_cut(tmp_path: Path, launcher: list[str]) -> tuple[int, int]:
    data, synced = tmp_path / "data", tmp_path / "synced"
    data.mkdir()
    synced.mkdir()
    lib = _shim(tmp_path)
    port = free_port()
    env = _env("", data, port)  # SQLite in the data directory
    env["HOOKBAY_RUN_WORKER"] = "inline"  # one process: the worker's commits share the writer
    out = subprocess.run([sys.executable, "-m", "hookbay", "source", "create", "--name", "cut", "--client", "acme",
                          "--json"], env=env, capture_output=True, check=True)
    url = orjson.loads(out.stdout)["ingest_url"]
    os.sync()  # what exists before the server starts is on disk
    assert not (data / (DB + "-wal")).exists()
    shutil.copyfile(data / DB, synced / DB)

    log = tmp_path / "server.log"
    cut = {**env, "LD_PRELOAD": str(lib), "SYNCED_WATCH": str(data.resolve()), "SYNCED_DIR": str(synced)}
    proc = subprocess.Popen([sys.executable, *launcher, "serve"], env=cut, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _start_wait(proc, port, log)
        acked = _send(url, 300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert len(acked) == 300, log.read_text()[-2000:]
    _power_loss(data, synced)

    proc = _start(env, port, log)  # restart without the shim: SQLite recovers from what was synced
    try:
        with sqlite3.connect(data / DB) as c:
            stored = dict(c.execute("SELECT id, body FROM requests").fetchall())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    lost = [rid for body, rid in acked.items() if rid not in stored]
    for body, rid in acked.items():
        if rid in stored:
            assert bytes(stored[rid]) == body
    return len(lost), len(acked)


def _start_wait(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def test_acknowledged_requests_survive_a_power_cut(tmp_path: Path) -> None:
    lost, acked = _lost_after_power_cut(tmp_path, ["-m", "hookbay"])
    assert lost == 0, f"{lost} of {acked} acknowledged requests lost"


def test_control_synchronous_normal_loses_acknowledged_requests(tmp_path: Path) -> None:
    """The planted bug of row 4: with WAL commits not synced, the same cut loses answered requests."""
    lost, acked = _lost_after_power_cut(tmp_path, ["-c", NORMAL_LAUNCHER])
    assert lost > 0, f"none of {acked} acknowledged requests lost: the model cannot see a missing fsync"
