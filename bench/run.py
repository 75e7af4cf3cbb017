#!/usr/bin/env python3
"""Ingest throughput benchmark: hookbay vs. a naive FastAPI receiver, adnanh/webhook
and a raw ASGI ceiling, all driven by the same wrk load one after another.

    .venv/bin/python bench/run.py [--duration 10] [--connections 64] [--only NAME ...]

(or ``bash bench/run``, which installs wrk/webhook and the venv first).  See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BODY_FILE = BENCH_DIR / "contact.json"
LUA_SCRIPT = BENCH_DIR / "post.lua"
HOOKS_FILE = BENCH_DIR / "webhook-hooks.json"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
HOOKBAY = str(VENV_BIN / "hookbay")

TARGETS = ["hookbay", "hookbay-pg", "hookbay-pg-N", "naive", "webhook", "raw-asgi", "durable-min"]
HOOKBAY_TARGETS = ("hookbay", "hookbay-pg", "hookbay-pg-N")
# PostgreSQL targets: a fresh database per run on this server (as the tests' HOOKBAY_TEST_PG_URL)
PG_ADMIN_URL = os.environ.get("HOOKBAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_RATIO = 0.7  # one PostgreSQL process against the SQLite figure (issue #17)
HOST = "127.0.0.1"
UVICORN_QUIET = ["--no-access-log", "--log-level", "warning"]

# Targets from the spec: hookbay req/s relative to each other target.
RATIO_TARGETS = {"naive": 4.0, "webhook": 1.5, "raw-asgi": 0.3}
P99_LIMIT_MS = 50.0


# ---------------------------------------------------------------- data model


@dataclass
class Result:
    target: str
    url: str = ""
    ok: bool = False
    error: str = ""
    requests: int | None = None
    duration_s: float | None = None
    req_per_s: float | None = None
    p50_ms: float | None = None
    p75_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int | None = None  # from the lua response() counter (exact)
    wrk_non_2xx_or_3xx: int | None = None  # wrk's own "Non-2xx or 3xx responses" line
    responses: int | None = None
    acked_2xx: int | None = None
    peak_rss_mib: float | None = None  # server process tree
    peak_rss_main_mib: float | None = None  # server process alone
    stored_accepted: int | None = None  # hookbay only
    acked_missing: int | None = None  # hookbay only
    processes: int | None = None  # hookbay-pg-N: serve --processes
    server_exit_code: int | None = None
    wrk_output: str = ""
    server_log_tail: str = ""

    @property
    def errors(self) -> int | None:
        if self.non_2xx is None and not self.socket_errors:
            return None
        return (self.non_2xx or 0) + sum(self.socket_errors.values())


class TargetFailed(Exception):
    pass


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 2.0) -> int:
    """Return the HTTP status code (also for 4xx/5xx); raise OSError if nothing answers."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_until_answers(
    proc: subprocess.Popen, url: str, want_status: int | None, log: Path | None = None, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last_line = tail(log, 1).strip() if log else ""
            raise TargetFailed(
                f"server exited with code {proc.returncode} before answering"
                + (f": {last_line}" if last_line else "")
            )
        try:
            status = http("GET", url, timeout=1.0)
            if want_status is None or status == want_status:
                return
            last = f"GET {urlsplit(url).path} -> {status}"
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    raise TargetFailed(f"server did not answer within {timeout:.0f}s ({last})")


def read_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0  # gone, or a zombie / kernel thread without VmRSS


def process_tree(root: int) -> list[int]:
    """root and all its descendants (scans /proc/*/stat for parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # field 4 (ppid) follows the ")" that closes the command name
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


_KCMP_SYSCALL = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
_KCMP_VM = 1
_libc = None


def same_vm(pid1: int, pid2: int) -> bool:
    """True if two processes share one address space (a vfork()ed child before exec).

    Such a child reports the parent's whole VmRSS; counting it would double the figure.
    Uses kcmp(2); if unavailable, assume distinct address spaces.
    """
    global _libc
    if _KCMP_SYSCALL is None:
        return False
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.syscall(_KCMP_SYSCALL, pid1, pid2, _KCMP_VM, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class RssSampler(threading.Thread):
    """Polls the summed VmRSS of a process tree every `interval` seconds; keeps the peak.

    Children are included; a child sharing the server's address space (vfork before exec)
    is counted once.  The server process's own peak is kept too.
    """

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self.peak_main_kib = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        main = read_rss_kib(self.pid)
        total = main
        for p in process_tree(self.pid)[1:]:
            rss = read_rss_kib(p)
            if rss and not same_vm(self.pid, p):
                total += rss
        self.peak_main_kib = max(self.peak_main_kib, main)
        self.peak_kib = max(self.peak_kib, total)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        self.sample()
        return self.peak_kib / 1024.0


def start_server(cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen:
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: we can clean up its children
        )
    finally:
        log.close()


def stop_server(proc: subprocess.Popen, grace: float = 15.0) -> int | None:
    """SIGTERM the server, wait for a graceful exit, then SIGKILL its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers in the group (e.g. workers)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------- wrk


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if not m:
        raise ValueError(f"bad wrk duration {value!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(out: str, res: Result) -> None:
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out, re.M)
    if m:
        res.requests = int(m.group(1))
        res.duration_s = _ms(m.group(2) + m.group(3)) / 1000.0
    m = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    if m:
        res.req_per_s = float(m.group(1))
    # "  Latency Distribution" block from --latency
    for pct, attr in (("50", "p50_ms"), ("75", "p75_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+(?:us|ms|s|m|h))\s*$", out, re.M)
        if m:
            setattr(res, attr, _ms(m.group(1)))
    res.socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    res.wrk_non_2xx_or_3xx = int(m.group(1)) if m else 0
    m = re.search(r"BENCH_COUNTS responses=(\d+) acked_2xx=(\d+) non_2xx=(\d+)", out)
    if m:
        res.responses, res.acked_2xx, res.non_2xx = map(int, m.groups())
    else:
        # lua counter missing (should not happen): fall back to wrk's own numbers
        res.non_2xx = res.wrk_non_2xx_or_3xx
        if res.requests is not None:
            res.acked_2xx = res.requests - res.wrk_non_2xx_or_3xx


def run_wrk(url: str, args: argparse.Namespace, server_pid: int, res: Result) -> None:
    cmd = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
        "-s", str(LUA_SCRIPT), url, "--", str(BODY_FILE),
    ]  # fmt: skip
    sampler = RssSampler(server_pid)
    sampler.start()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 60)
    finally:
        res.peak_rss_mib = sampler.stop()
        res.peak_rss_main_mib = sampler.peak_main_kib / 1024.0
    res.wrk_output = proc.stdout + (("\n[stderr]\n" + proc.stderr) if proc.stderr.strip() else "")
    if proc.returncode != 0:
        raise TargetFailed(f"wrk exited {proc.returncode}: {proc.stderr.strip()[:300]}")
    parse_wrk(proc.stdout, res)
    if res.req_per_s is None:
        raise TargetFailed("could not parse wrk output")


def smoke_post(url: str) -> bool:
    """One POST before the load starts; raises TargetFailed unless it is acknowledged 2xx."""
    try:
        status = http("POST", url, BODY_FILE.read_bytes(), timeout=10.0)
    except OSError as e:
        raise TargetFailed(f"smoke POST failed: {e}") from e
    if not 200 <= status < 300:
        raise TargetFailed(f"smoke POST answered {status}")
    return True


# ---------------------------------------------------------------- targets


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_cli(cmd: list[str], env: dict[str, str], timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise TargetFailed(f"{cmd[0]} not found") from e
    except subprocess.TimeoutExpired as e:
        raise TargetFailed(f"`{' '.join(cmd[1:3])}` timed out after {timeout:.0f}s") from e
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise TargetFailed(
            f"`{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd[:3]))}` "
            f"exited {proc.returncode}: {msg[-1] if msg else ''}"[:300]
        )
    return proc.stdout


def _ingest_url_from(out: str) -> str:
    """`hookbay source create --json` output -> ingest_url (tolerates log lines around the JSON)."""
    candidates = [out] + out.splitlines()[::-1]
    for text in candidates:
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict):
            if isinstance(data.get("ingest_url"), str):
                return data["ingest_url"]
            for v in data.values():  # e.g. {"source": {...}}
                if isinstance(v, dict) and isinstance(v.get("ingest_url"), str):
                    return v["ingest_url"]
    m = re.search(r'"ingest_url"\s*:\s*"([^"]+)"', out)
    if m:
        return m.group(1)
    raise TargetFailed(f"no ingest_url in `source create --json` output: {out.strip()[:200]!r}")


def bench_hookbay(args, work: Path, res: Result) -> None:
    _bench_hookbay(args, work, res, pg_processes=None)


def bench_hookbay_pg(args, work: Path, res: Result) -> None:
    _bench_hookbay(args, work, res, pg_processes=1)


def bench_hookbay_pg_n(args, work: Path, res: Result) -> None:
    _bench_hookbay(args, work, res, pg_processes=args.pg_processes)


def _pg_database() -> tuple[str, str]:
    try:
        import psycopg
    except ImportError as e:
        raise TargetFailed("psycopg missing (pip install -e .)") from e
    name = "hb_bench_" + uuid.uuid4().hex[:10]
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        raise TargetFailed(f"PostgreSQL at {PG_ADMIN_URL.split('@')[-1]}: {str(e).strip()[:200]}") from e
    return name, f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _bench_hookbay(args, work: Path, res: Result, pg_processes: int | None) -> None:
    """``hookbay serve`` with default settings: on SQLite, or on a fresh PostgreSQL database with
    ``--processes pg_processes``. Counts what was stored against what was acknowledged."""
    data_dir = work / "hookbay-data"
    data_dir.mkdir()
    port = free_port()
    env = _base_env()
    env.update(
        HOOKBAY_DATA_DIR=str(data_dir),
        HOOKBAY_PORT=str(port),
        HOOKBAY_HOST=HOST,
        HOOKBAY_LOG_LEVEL="warning",
    )
    env.pop("HOOKBAY_DATABASE_URL", None)
    env.pop("HOOKBAY_PUBLIC_URL", None)
    env.pop("HOOKBAY_PROCESSES", None)
    pg_name = None
    serve = [HOOKBAY, "serve"]
    if pg_processes is not None:
        pg_name, env["HOOKBAY_DATABASE_URL"] = _pg_database()
        res.processes = pg_processes
        if pg_processes > 1:
            serve += ["--processes", str(pg_processes)]
    try:
        if not Path(HOOKBAY).exists():
            raise TargetFailed(f"{HOOKBAY} missing (run `pip install -e .`)")
        _run_cli([HOOKBAY, "migrate"], env, timeout=120)
        out = _run_cli([HOOKBAY, "source", "create", "--name", "bench", "--client", "bench", "--json"], env, 60)
        ingest = urlsplit(_ingest_url_from(out))
        # Trust the path, not the host/port the CLI printed.
        res.url = f"http://{HOST}:{port}{ingest.path}"

        log = work / "hookbay-serve.log"
        proc = start_server(serve, env, log)
        acked = 0
        try:
            wait_until_answers(proc, f"http://{HOST}:{port}/healthz", want_status=200, log=log)
            smoke_post(res.url)
            acked += 1
            run_wrk(res.url, args, proc.pid, res)
            acked += res.acked_2xx or 0
        finally:
            res.server_exit_code = stop_server(proc)
            res.server_log_tail = tail(log)
        res.stored_accepted = _stored_pg(env["HOOKBAY_DATABASE_URL"]) if pg_name else _stored_sqlite(data_dir)
        res.acked_missing = max(0, acked - res.stored_accepted)
    finally:
        if pg_name:
            _drop_pg_database(pg_name)


def _stored_pg(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as c:
        row = c.execute("SELECT count(*) FROM requests WHERE verdict='accepted'").fetchone()
    return int(row[0]) if row else 0


def _stored_sqlite(data_dir: Path) -> int:
    db_path = data_dir / "hookbay.db"
    if not db_path.exists():
        raise TargetFailed(f"{db_path} not found after run")
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            (stored,) = con.execute("SELECT count(*) FROM requests WHERE verdict='accepted'").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise TargetFailed(f"counting stored requests: {e}") from e
    return int(stored)


def bench_naive(args, work: Path, res: Result) -> None:
    port = free_port()
    token = str(uuid.uuid4())
    env = _base_env()
    env.update(NAIVE_TOKEN=token, NAIVE_DB=str(work / "naive.db"))
    cmd = [PYTHON, "-m", "uvicorn", "bench.naive_receiver:app", "--host", HOST, "--port", str(port),
           "--workers", "1", *UVICORN_QUIET]  # fmt: skip
    res.url = f"http://{HOST}:{port}/V1/Data/{token}"
    log = work / "naive.log"
    proc = start_server(cmd, env, log)
    try:
        wait_until_answers(proc, f"http://{HOST}:{port}/", want_status=None, log=log)
        smoke_post(res.url)
        run_wrk(res.url, args, proc.pid, res)
    finally:
        res.server_exit_code = stop_server(proc)
        res.server_log_tail = tail(log)


def bench_webhook(args, work: Path, res: Result) -> None:
    exe = shutil.which("webhook")
    if not exe:
        raise TargetFailed("webhook not installed (apt-get install -y webhook)")
    port = free_port()
    cmd = [exe, "-hooks", str(HOOKS_FILE), "-port", str(port), "-ip", HOST]
    res.url = f"http://{HOST}:{port}/hooks/bench"
    log = work / "webhook.log"
    proc = start_server(cmd, _base_env(), log)
    try:
        wait_until_answers(proc, f"http://{HOST}:{port}/", want_status=None, log=log)
        smoke_post(res.url)
        run_wrk(res.url, args, proc.pid, res)
    finally:
        res.server_exit_code = stop_server(proc)
        res.server_log_tail = tail(log)


def _bench_asgi_module(module: str, name: str, work: Path, args, res: Result, env: dict[str, str]) -> None:
    """Serve ``module`` with uvicorn (one worker, uvloop, httptools) and load it with wrk."""
    port = free_port()
    cmd = [PYTHON, "-m", "uvicorn", module, "--host", HOST, "--port", str(port),
           "--workers", "1", "--loop", "uvloop", "--http", "httptools", *UVICORN_QUIET]  # fmt: skip
    res.url = f"http://{HOST}:{port}/V1/Data/{uuid.uuid4()}"
    log = work / f"{name}.log"
    proc = start_server(cmd, env, log)
    try:
        wait_until_answers(proc, f"http://{HOST}:{port}/", want_status=None, log=log)
        smoke_post(res.url)
        run_wrk(res.url, args, proc.pid, res)
    finally:
        res.server_exit_code = stop_server(proc)
        res.server_log_tail = tail(log)


def bench_raw_asgi(args, work: Path, res: Result) -> None:
    _bench_asgi_module("bench.raw_asgi:app", "raw-asgi", work, args, res, _base_env())


def bench_durable_min(args, work: Path, res: Result) -> None:
    """Reference, not a target: raw ASGI + group-committed SQLite (WAL, synchronous=FULL)."""
    env = {**_base_env(), "HOOKBAY_DURABLE_MIN_DB": str(work / "durable-min.db")}
    _bench_asgi_module("bench.durable_min:app", "durable-min", work, args, res, env)


RUNNERS = {
    "durable-min": bench_durable_min,
    "hookbay": bench_hookbay,
    "hookbay-pg": bench_hookbay_pg,
    "hookbay-pg-N": bench_hookbay_pg_n,
    "naive": bench_naive,
    "webhook": bench_webhook,
    "raw-asgi": bench_raw_asgi,
}


# ---------------------------------------------------------------- report


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def _oneline(s: str) -> str:
    return " ".join(s.split()).replace("|", "\\|")


def _label(r: Result) -> str:
    if r.target == "hookbay-pg-N" and r.processes:
        return f"hookbay-pg-{r.processes}"
    return r.target


def results_table(results: list[Result]) -> str:
    lines = [
        "| target | req/s | p50 ms | p99 ms | peak RSS MiB | errors (non-2xx + socket) | acked missing |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.target in HOOKBAY_TARGETS:
            missing = _f(r.acked_missing, "{:d}")
        else:
            missing = "n/a"
        if r.ok:
            err = r.errors
            err_s = "—" if err is None else f"{err} ({r.non_2xx or 0} + {sum(r.socket_errors.values())})"
            lines.append(
                f"| {_label(r)} | {_f(r.req_per_s, '{:,.0f}')} | {_f(r.p50_ms)} | {_f(r.p99_ms)} "
                f"| {_f(r.peak_rss_mib, '{:.1f}')} | {err_s} | {missing} |"
            )
        else:
            lines.append(
                f"| {_label(r)} | FAILED: {_oneline(r.error)[:160]} | {_f(r.p50_ms)} | {_f(r.p99_ms)} "
                f"| {_f(r.peak_rss_mib, '{:.1f}')} | {_f(r.errors, '{:d}')} | {missing} |"
            )
    return "\n".join(lines)


def checks(results: list[Result]) -> tuple[list[dict], list[str]]:
    by = {r.target: r for r in results}
    hb = by.get("hookbay")
    hb_rps = hb.req_per_s if hb and hb.ok else None
    ratios: list[str] = []
    out: list[dict] = []
    for name in ("naive", "webhook", "raw-asgi", "durable-min"):
        other = by.get(name)
        if other is None:
            continue
        if name not in RATIO_TARGETS:  # a reference: print the ratio, judge nothing
            if hb_rps and other.ok and other.req_per_s:
                ratios.append(f"- hookbay / {name}: {hb_rps / other.req_per_s:.2f}× (reference; no target)")
            continue
        if hb_rps and other.ok and other.req_per_s:
            ratio = hb_rps / other.req_per_s
            ratios.append(
                f"- hookbay / {name}: **{ratio:.2f}×** ({hb_rps:,.0f} / {other.req_per_s:,.0f} req/s)"
            )
        else:
            ratio = None
            ratios.append(f"- hookbay / {name}: n/a")
        need = RATIO_TARGETS[name]
        out.append({
            "check": f"hookbay ≥ {need:g}× {name} req/s",
            "value": None if ratio is None else round(ratio, 3),
            "status": "N/A" if ratio is None else ("PASS" if ratio >= need else "FAIL"),
        })  # fmt: skip
    for name in HOOKBAY_TARGETS:
        r = by.get(name)
        if r is None:
            continue
        label = _label(r)
        if name == "hookbay-pg":
            ratio = r.req_per_s / hb_rps if r.ok and r.req_per_s and hb_rps else None
            if ratio is not None:
                ratios.append(f"- hookbay-pg / hookbay (SQLite): **{ratio:.2f}×** ({r.req_per_s:,.0f} / {hb_rps:,.0f} req/s)")
            out.append({
                "check": f"hookbay-pg ≥ {PG_RATIO:g}× hookbay (SQLite) req/s",
                "value": None if ratio is None else round(ratio, 3),
                "status": "N/A" if ratio is None else ("PASS" if ratio >= PG_RATIO else "FAIL"),
            })  # fmt: skip
        if name == "hookbay-pg-N" and r.ok and r.req_per_s and hb_rps:
            ratios.append(f"- {label} / hookbay (SQLite): {r.req_per_s / hb_rps:.2f}× (reference; no target)")
        if name != "hookbay-pg-N":
            p99 = r.p99_ms if r.ok else None
            out.append({
                "check": f"{label} p99 < {P99_LIMIT_MS:g} ms",
                "value": p99,
                "status": "N/A" if p99 is None else ("PASS" if p99 < P99_LIMIT_MS else "FAIL"),
            })  # fmt: skip
        miss = r.acked_missing if r.ok else None
        out.append({
            "check": f"zero acked requests missing ({label})",
            "value": miss,
            "status": "N/A" if miss is None else ("PASS" if miss == 0 else "FAIL"),
        })  # fmt: skip
    return out, ratios


def tool_version(cmd: list[str], default: str = "unknown", check: bool = False) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        if check and p.returncode != 0:
            return default
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return default


def environment(args) -> dict:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor() or "unknown",
        ),  # fmt: skip
        "kernel": platform.release(),
        "python": tool_version([PYTHON, "--version"]),
        "wrk": tool_version(["wrk", "--version"]).split(" Copyright")[0],
        "webhook": tool_version(["webhook", "-version"]),
        "git_commit": tool_version(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], "none", check=True
        ),
        "load": f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency -s bench/post.lua",
    }


def render_markdown(
    ts: str, env: dict, results: list[Result], check_rows: list[dict], ratios: list[str]
) -> str:
    parts = [
        f"# hookbay ingest benchmark — {ts}",
        "",
        f"Load: `{env['load']}` (POST bench/contact.json, application/json), targets run one after "
        f"another on {env['cpus']} CPUs ({env['cpu_model']}), server and wrk on the same machine.",
        "",
        results_table(results),
        "",
        "Ratios:",
        "",
        *ratios,
        "",
        "| check | value | result |",
        "|---|---:|---|",
        *[
            f"| {c['check']} | {'—' if c['value'] is None else c['value']} | **{c['status']}** |"
            for c in check_rows
        ],
        "",
        "Environment: " + ", ".join(f"{k}: {v}" for k, v in env.items() if k not in ("load",)),
    ]
    failed = [r for r in results if not r.ok]
    if failed:
        parts += ["", "## Failures", ""]
        for r in failed:
            parts += [f"### {r.target}", "", f"    {r.error}", ""]
            if r.server_log_tail:
                parts += ["Server log tail:", "", "```", r.server_log_tail, "```", ""]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- main


def ensure_tools() -> None:
    missing = [t for t in ("wrk", "webhook") if not shutil.which(t)]
    if not missing:
        return
    print(f"installing missing tools: {' '.join(missing)}", file=sys.stderr)
    subprocess.run(["apt-get", "update"], check=False)
    subprocess.run(["apt-get", "install", "-y", *missing], check=False)
    if not shutil.which("wrk"):
        sys.exit("wrk is required (apt-get install -y wrk)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds of load per target (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--only", nargs="+", choices=TARGETS, metavar="NAME",
                    help=f"run only these targets ({', '.join(TARGETS)})")  # fmt: skip
    ap.add_argument("--pg-processes", type=int, default=2, help="hookbay-pg-N: serve --processes (default 2)")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds to idle between targets (default 2)")
    ap.add_argument(
        "--keep-data", action="store_true", help="keep the temp data dir (databases, server logs)"
    )
    ap.add_argument("--no-save", action="store_true", help="print only; do not write bench/results/")
    args = ap.parse_args(argv)
    if args.connections < args.threads:
        ap.error("--connections must be >= --threads")

    ensure_tools()
    targets = [t for t in TARGETS if not args.only or t in args.only]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # Data lives on the same disk as the repo (not tmpfs) so fsync costs are real; *.tmp is gitignored.
    work = Path(tempfile.mkdtemp(prefix="run-", suffix=".tmp", dir=RESULTS_DIR))
    started = datetime.now(UTC)
    results: list[Result] = []
    try:
        for i, name in enumerate(targets):
            if i:
                time.sleep(args.pause)
            print(f"==> {name}: {args.duration}s ...", file=sys.stderr, flush=True)
            res = Result(target=name)
            tdir = work / name
            tdir.mkdir()
            try:
                RUNNERS[name](args, tdir, res)
                res.ok = True
            except TargetFailed as e:
                res.error = str(e)
            except Exception as e:  # never let one target take the whole run down
                res.error = f"{type(e).__name__}: {e}"
            if res.ok:
                print(f"    {res.req_per_s:,.0f} req/s, p99 {res.p99_ms} ms", file=sys.stderr)
            else:
                print(f"    FAILED: {res.error}", file=sys.stderr)
                if res.server_log_tail:
                    print("    " + res.server_log_tail.replace("\n", "\n    "), file=sys.stderr)
            results.append(res)
    finally:
        if args.keep_data:
            print(f"data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    env = environment(args)
    ts = started.strftime("%Y%m%dT%H%M%SZ")
    check_rows, ratios = checks(results)
    md = render_markdown(started.strftime("%Y-%m-%d %H:%M:%S UTC"), env, results, check_rows, ratios)
    print()
    print(results_table(results))
    print()
    if ratios:
        print("\n".join(ratios))
        print()
    for c in check_rows:
        print(f"{c['status']:4}  {c['check']}" + ("" if c["value"] is None else f"  ({c['value']})"))

    if not args.no_save:
        payload = {
            "started_utc": started.isoformat(),
            "args": {k: v for k, v in vars(args).items()},
            "environment": env,
            "results": [asdict(r) | {"errors": r.errors} for r in results],
            "checks": check_rows,
        }
        (RESULTS_DIR / f"{ts}.md").write_text(md)
        (RESULTS_DIR / f"{ts}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS_DIR / "latest.md").write_text(md)
        print(
            f"\nwrote bench/results/{ts}.md, bench/results/{ts}.json, bench/results/latest.md",
            file=sys.stderr,
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
