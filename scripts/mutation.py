"""Mutation-testing run for the modules that guard data and security (issue #19). Not part of CI.

Each module is mutated by mutmut 3 against its own tests only, in a throw-away copy of the
work tree (so ``mutants/`` and the ``[tool.mutmut]`` section never touch the repository), and the
score plus every surviving mutant's diff goes to ``bench/results/mutation-<timestamp>.md``.

    python3 -m venv /tmp/mutvenv && /tmp/mutvenv/bin/pip install -e '.[test]' mutmut==3.8.1 pytest-timeout
    /tmp/mutvenv/bin/python scripts/mutation.py                 # every module
    /tmp/mutvenv/bin/python scripts/mutation.py signatures ssrf  # some of them
    /tmp/mutvenv/bin/python scripts/mutation.py --list

Why mutmut rather than cosmic-ray: mutmut records which tests reach each function and forks a
warm pytest per mutant, running only those tests, so a module runs in minutes on 2 cores; cosmic-ray
starts the whole test command afresh for every mutant (interpreter, imports, collection), several
times slower here, and needs a session database and config file per module.

Mutants judged equivalent (no behaviour can tell them apart) are listed with a one-line reason in
``scripts/mutation_equivalents.txt``; the report gives the raw score and the score without them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents.txt"
NO_PG = ["-k", "not postgresql", "-m", "not slow"]  # SQLite only: the store logic is the same code
# tests/conftest.py's hypothesis profile without shrinking: a mutant needs one failing example, and
# shrinking one (the stateful profile-store test) took minutes per mutant.
MUTATION_ENV = {**os.environ, "HOOKBAY_HYPOTHESIS_PROFILE": "mutation"}
# A mutant that makes a test hang (a writer that never answers) would otherwise hold its slot for
# mutmut's limit, 30 times the tests' own time: the test fails after 10 s instead (the thread method
# ends the forked child, so a hang in a thread or a lock is caught too). It counts as killed, as
# mutmut's own timeout does.
HANG = ["--timeout=10", "--timeout-method=thread"]


@dataclass
class Module:
    name: str
    path: str
    tests: list[str]
    only: list[str] = field(default_factory=list)  # mutant-name globs: part of a file (its check functions)
    pytest_args: list[str] = field(default_factory=list)
    note: str = ""


MODULES = [
    Module("signatures", "hookbay/signatures/*.py", ["tests/unit/test_signatures.py"]),
    Module("ssrf", "hookbay/actions/ssrf.py", ["tests/unit/test_ssrf.py"]),
    Module("crypto", "hookbay/crypto.py", ["tests/unit/test_crypto.py"]),
    Module("profiles", "hookbay/profiles.py", ["tests/unit/test_merge_fields.py", "tests/unit/test_profile_rules.py"]),
    Module("profile-view", "hookbay/ops/profiles.py", ["tests/unit/test_profile_rules.py"],
           only=["hookbay.ops.profiles.x_profile_out__*"], note="`profile_out`, the API's profile view"),
    Module("retry", "hookbay/actions/retry.py", ["tests/unit/test_retry.py"]),
    Module("worker-retry", "hookbay/processing/worker.py", ["tests/unit/test_job_retry.py"],
           only=["hookbay.processing.worker.xǁJobRetryPolicyǁ*"], note="JobRetryPolicy only"),
    Module("agent-journal", "hookbay/relay/journal.py", ["tests/unit/test_agent_journal.py"]),
    Module("consent", "hookbay/actions/base.py",
           ["tests/unit/test_consent_at_send.py", "tests/integration/test_deliveries.py"],
           only=["hookbay.actions.base.x_current_consent__*"], pytest_args=NO_PG, note="`current_consent` (send time)"),
    Module("ingest-checks", "hookbay/ingest/endpoint.py",
           ["tests/unit/test_read_body.py", "tests/integration/test_auth.py", "tests/integration/test_ingest.py",
            "tests/integration/test_ingest_edge_encoding.py::test_signature_of_a_compressed_body"],
           only=["hookbay.ingest.endpoint.xǁIngestǁ_check_*", "hookbay.ingest.endpoint.x_read_body__*", "hookbay.ingest.endpoint.x__header_map__*"],
           pytest_args=NO_PG, note="signature (also of a compressed body), API key, body limit, header map"),
    # The end-to-end profile tests go through a live server (too slow per mutant): a stateful test of
    # the store functions against a reference model on SQLite instead, and the PostgreSQL key lookup
    # on one PostgreSQL database per run (not parametrized, so NO_PG keeps it).
    Module("store-profiles", "hookbay/store/profiles.py",
           ["tests/integration/test_profile_store_stateful.py", "tests/integration/test_profile_store_pg.py"],
           pytest_args=NO_PG),
    Module("store-merges", "hookbay/store/merges.py", ["tests/integration/test_profile_store_stateful.py"],
           pytest_args=NO_PG),
    # The SQLite paths (commit, synchronous level, batching, idempotency, ingest lanes, settling the
    # callers, write deadlines) and, in test_writer_pg.py on one PostgreSQL database per run (its
    # tests are not parametrized, so NO_PG keeps them), the relaxed commit and the owed NOTIFY.
    Module("writer", "hookbay/store/writer.py",
           ["tests/unit/test_write_deadlines.py", "tests/integration/test_writer_batches.py",
            "tests/integration/test_store.py::test_sqlite_writer_commits_every_ingest_with_synchronous_full",
            "tests/integration/test_writer_pg.py"],
           only=["hookbay.store.writer.x__settle*", "hookbay.store.writer.xǁ_Deadlinesǁ*",
                 *(f"hookbay.store.writer.xǁWriterǁ{f}__*" for f in (
                     "ingest", "run", "_loop", "_run_batch", "_commit_group", "_commit_sa",
                     "_write_ingests_with_cursor", "_commit_ingests_sqlite", "_sqlite_synchronous", "_write_ingests",
                     "_mark_duplicate", "_find_originals", "_insert_keyed", "_insert_many"))],
           pytest_args=[*NO_PG, *HANG], note="SQLite commit, batch and idempotency paths; write deadlines"),
    Module("relay-store", "hookbay/store/relay.py",
           ["tests/integration/test_relay_store.py", "tests/integration/test_relay_queue_rules.py"], pytest_args=NO_PG),
    # The end-to-end agent tests run it as a subprocess, out of mutmut's sight: its delivery loop
    # is tested in process against a model of the relay queue instead.
    Module("agent", "hookbay/relay/agent.py",
           ["tests/unit/test_agent_forwarding.py", "tests/unit/test_agent_delivery.py"],
           only=["hookbay.relay.agent.x_backoff__*", "hookbay.relay.agent.x_forward_url__*",
                 "hookbay.relay.agent.x_forward_headers__*",
                 *(f"hookbay.relay.agent.xǁAgentǁ{f}__*" for f in (
                     "_recover", "_call", "_pull", "_ack_later", "_acks_sent", "_send_acks", "_nack", "_deliver",
                     "_forward"))],
           note="back-off, forwarded request, pull/ack/nack/Retry-After, journal recovery"),
]
BY_NAME = {m.name: m for m in MODULES}


def load_equivalents() -> dict[str, str]:
    """``mutant-name  reason`` per line; ``#`` starts a comment."""
    out: dict[str, str] = {}
    if EQUIVALENTS.exists():
        for line in EQUIVALENTS.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def copy_tree(dest: Path) -> None:
    """The work tree as it is now (tracked and new files, not ignored ones) into ``dest``."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in files:
        if not f or f.startswith("bench/results/"):
            continue
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "]"


@dataclass
class Result:
    module: Module
    statuses: dict[str, str]
    diffs: dict[str, str]
    seconds: float
    complete: bool
    error: str = ""


def run_module(m: Module, jobs: int, timeout: float) -> Result:
    mutmut = [sys.executable, "-m", "mutmut"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutation-{m.name}-") as tmp:
        work = Path(tmp)
        copy_tree(work)
        with (work / "pyproject.toml").open("a") as f:
            f.write("\n[tool.mutmut]\n"
                    'source_paths = ["hookbay"]\n'
                    f"only_mutate = {toml_list([m.path])}\n"
                    f"pytest_add_cli_args_test_selection = {toml_list(m.tests)}\n"
                    f"pytest_add_cli_args = {toml_list(['-p', 'no:cacheprovider', '-q', *m.pytest_args])}\n"
                    "use_git_change_detection = false\n"
                    # files the tests read besides the package (bench/contact.json, docs, the README)
                    f"also_copy = {toml_list([p for p in ('bench/', 'docs/', 'scripts/', 'README.md') if (work / p).exists()])}\n")
        complete, error = True, ""
        try:
            proc = subprocess.run([*mutmut, "run", "--max-children", str(jobs), *m.only], cwd=work,
                                  capture_output=True, text=True, timeout=timeout, env=MUTATION_ENV)
            if proc.returncode != 0:
                complete, error = False, (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            complete, error = False, f"stopped after {timeout:.0f} s: the mutants not run yet are not counted"
        listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, capture_output=True,
                                 text=True).stdout
        statuses = {}
        for line in listing.splitlines():
            name, sep, status = line.strip().rpartition(": ")
            if sep and name.startswith("hookbay."):
                if not m.only or any(_glob(name, p) for p in m.only):
                    statuses[name] = status.strip()
        wanted = [n for n, st in statuses.items() if st in ("survived", "no tests", "suspicious")]
        shown = subprocess.run([sys.executable, "-c", _DIFFS], cwd=work, input=json.dumps(wanted),
                               capture_output=True, text=True)
        diffs = json.loads(shown.stdout) if shown.returncode == 0 else {n: shown.stderr[-500:] for n in wanted}
    return Result(m, statuses, diffs, time.monotonic() - started, complete, error)


# every survivor's diff from one process (``mutmut show`` per mutant pays mutmut's start-up each time)
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
out = {}
for name in json.load(sys.stdin):
    out[name] = get_diff_for_mutant(name, path=find_mutant(name).path).strip()
print(json.dumps(out))
"""


def _glob(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def score(r: Result, equivalents: dict[str, str]) -> tuple[int, int, int, int, float, float]:
    """killed, survived, equivalent (of the survived), counted; raw score and score without equivalents."""
    counted = {n: s for n, s in r.statuses.items() if s not in ("not checked", "skipped")}
    killed = sum(1 for s in counted.values() if s in ("killed", "timeout", "segfault"))
    survived = [n for n, s in counted.items() if s in ("survived", "no tests", "suspicious")]
    equiv = sum(1 for n in survived if n in equivalents)
    total = len(counted)
    raw = 100.0 * killed / total if total else 0.0
    adj = 100.0 * killed / (total - equiv) if total - equiv else 0.0
    return killed, len(survived), equiv, total, raw, adj


def report(results: list[Result], equivalents: dict[str, str], jobs: int) -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hookbay", "tests"],
                           capture_output=True, text=True).stdout.strip()
    out = [f"# Mutation run {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}", "",
           f"mutmut {_mutmut_version()}, commit {commit}{' + local changes' if dirty else ''}, "
           f"{jobs} children, each module against its own tests (`scripts/mutation.py`).", "",
           "| module | file | tests | mutants | killed | survived | equivalent | score | without equivalents | time |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        k, s, e, t, raw, adj = score(r, equivalents)
        where = r.module.path + (f" ({r.module.note})" if r.module.note else "")
        flag = "" if r.complete else " (incomplete)"
        out.append(f"| {r.module.name} | {where} | {', '.join(Path(x).name for x in r.module.tests)} | {t} | {k} "
                   f"| {s} | {e} | {raw:.1f}%{flag} | {adj:.1f}% | {r.seconds:.0f} s |")
    for r in results:
        out += ["", f"## {r.module.name}", ""]
        if r.error:
            out += ["```", r.error.strip(), "```", ""]
        if not r.diffs:
            out.append("No surviving mutants.")
        for name, diff in r.diffs.items():
            why = equivalents.get(name)
            out += [f"### `{name}`" + (f" — equivalent: {why}" if why else ""), "", "```diff", diff, "```", ""]
    return "\n".join(out) + "\n"


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="module names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the modules and their tests")
    ap.add_argument("--jobs", type=int, default=2, help="mutants run at once (2)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per module before it is cut short (1200)")
    ap.add_argument("--out", type=Path, help="results file (bench/results/mutation-<timestamp>.md)")
    args = ap.parse_args()
    if args.list:
        for m in MODULES:
            print(f"{m.name:15} {m.path:28} {' '.join(m.tests)}{'  ' + m.note if m.note else ''}")
        return 0
    unknown = [n for n in args.modules if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; see --list")
    try:
        _mutmut_version()
    except Exception:
        ap.error("mutmut is not installed in this interpreter: pip install mutmut==3.8.1")
    try:
        import pytest_timeout  # noqa: F401
    except ImportError:  # the writer's tests are run with --timeout
        ap.error("pytest-timeout is not installed in this interpreter: pip install pytest-timeout")
    chosen = [BY_NAME[n] for n in args.modules] if args.modules else MODULES
    equivalents = load_equivalents()
    out = args.out or ROOT / "bench" / "results" / f"mutation-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for m in chosen:
        print(f"{m.name}: mutating {m.path} against {' '.join(m.tests)} ...", flush=True)
        r = run_module(m, args.jobs, args.timeout)
        results.append(r)
        k, s, e, t, raw, adj = score(r, equivalents)
        print(f"{m.name}: {k}/{t} killed, {s} survived ({e} equivalent): {raw:.1f}% "
              f"({adj:.1f}% without equivalents) in {r.seconds:.0f} s{'' if r.complete else ' INCOMPLETE'}",
              flush=True)
        out.write_text(report(results, equivalents, args.jobs))  # after every module: a cut-short run keeps its part
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
