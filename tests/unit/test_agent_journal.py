"""The relay agent's journal on a real file: what a killed agent left behind is read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookbay.relay.journal import COMPACT_BYTES, Journal, JournalLocked

LEASE = "agt_0123456789abcdef0123"


def test_a_killed_run_leaves_owed_acks_its_lease_and_the_message_in_doubt(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    assert j.open().owed == {}
    j.pulling(LEASE)
    for mid in (1, 2, 3):
        j.forwarding(mid, LEASE)
        j.forwarded(mid, LEASE)
    j.acked([1])
    j.forwarding(4, LEASE)  # killed here: no close(), the lock goes with the process
    os.close(j._lock_fd)
    with path.open("ab") as f:
        f.write(b"D 9")  # a torn last line never counts
    rec = Journal(path).open()
    assert rec.owed == {2: LEASE, 3: LEASE} and rec.lease_id == LEASE and rec.in_doubt == 4


def test_one_agent_per_journal_and_compaction_keeps_it_small(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    j.open()
    with pytest.raises(JournalLocked):
        Journal(path).open()
    j.pulling(LEASE)
    for mid in range(1, 1500):
        j.forwarding(mid, LEASE)
        j.forwarded(mid, LEASE)
        j.acked([mid])
    assert path.stat().st_size <= COMPACT_BYTES + 100
    j.forwarding(1500, LEASE)
    j.forwarded(1500, LEASE)
    j.close()
    rec = Journal(path).open()
    assert rec.owed == {1500: LEASE} and rec.in_doubt is None


# --- issue #19: what the mutation run found untested ----------------------------------------------


def test_default_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hookbay.relay.journal import default_state_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "hookbay-agent"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "hookbay-agent"


def test_one_journal_per_server_and_token(tmp_path: Path) -> None:
    import hashlib

    from hookbay.relay.journal import default_journal

    a = default_journal(tmp_path, "https://hb.example/", "rly_a")
    digest = hashlib.sha256(b"https://hb.example\nrly_a").hexdigest()[:16]
    assert a == tmp_path / f"journal-{digest}.log"
    assert default_journal(tmp_path, "https://hb.example", "rly_a") == a  # a trailing slash is the same server
    assert default_journal(tmp_path, "https://hb.example", "rly_b") != a
    assert default_journal(tmp_path, "https://other.example", "rly_a") != a
    assert default_journal(tmp_path, "https://hb.example/X", "rly_a") != a  # only slashes are trimmed


def test_open_makes_private_files_in_a_new_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "j.log"
    j = Journal(path)
    j.open()
    assert (path.stat().st_mode & 0o777, os.stat(f"{path}.lock").st_mode & 0o777) == (0o600, 0o600)
    with pytest.raises(JournalLocked) as e:
        Journal(path).open()
    assert str(e.value) == f"another agent is using the journal {path}"
    j.close()
    j.close()  # twice is harmless
    Journal(path).open()  # the lock went with close()


def test_a_journal_never_opened_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    j.sync()
    j.close()
    assert not path.exists()


def test_replay_reads_every_kind_and_skips_what_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    other = "agt_ffffffffffffffffffff"
    path.write_bytes(b"\n".join([
        b"P " + LEASE.encode(),
        b"P short",  # not a lease id: ignored
        b"P " + other.encode() + b" extra",  # three parts: ignored
        b"D 1 " + LEASE.encode(),
        b"D 2 " + LEASE.encode(),
        b"D 3 bad!lease",  # not a lease id: ignored
        b"D 4 " + LEASE.encode() + b" x",  # four parts: ignored
        b"\xff\xfe junk",
        b"",
        b"A 1",
        b"F 7 " + LEASE.encode(),
        b"N 8",  # another message failed: 7 stays in doubt
        b"N 7 extra",  # malformed: ignored
        b"Q 7",
    ]) + b"\n")
    rec = Journal(path).open()
    assert rec == type(rec)(owed={2: LEASE}, lease_id=LEASE, in_doubt=7)
    # and compaction wrote exactly that state back
    assert path.read_bytes() == f"P {LEASE}\nD 2 {LEASE}\nF 7 -\n".encode()


@pytest.mark.parametrize(("last", "in_doubt"), [
    (f"D 7 {LEASE}", None), ("N 7", None), (f"D 8 {LEASE}", 7), ("N 8", 7), (f"F 9 {LEASE}", 9)])
def test_the_message_in_doubt_is_cleared_only_by_its_own_outcome(tmp_path: Path, last: str, in_doubt: int | None) -> None:
    path = tmp_path / "j.log"
    path.write_text(f"F 7 {LEASE}\n{last}\n")
    assert Journal(path).open().in_doubt == in_doubt


def test_a_clean_close_leaves_the_state_compacted(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    j.open()
    j.pulling(LEASE)
    j.forwarding(1, LEASE)
    j.forwarded(1, LEASE)
    j.forwarding(2, LEASE)
    j.failed(2)
    j.acked([])
    j.close()
    assert path.read_text() == f"P {LEASE}\nD 1 {LEASE}\n"
    assert not path.with_name("j.log.tmp").exists()


def test_pull_and_forward_lines_are_fsynced_the_others_are_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The durability contract of the module docstring, seen from inside: ``P`` and ``F`` (with
    every ``D`` before them) reach the disk before the pull or forward starts; ``D``, ``N`` and
    ``A`` are only written. (A power-loss test cannot run here; the fsync calls are the property.)"""
    j = Journal(tmp_path / "j.log")
    j.open()
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(j.path.read_text().splitlines()[-1]), real(fd)))
    j.pulling(LEASE)
    j.forwarding(5, LEASE)
    assert j.state.in_doubt == 5
    j.forwarded(5, LEASE)
    j.forwarding(6, LEASE)
    j.failed(6)
    j.acked([5, 99])  # an id never owed is fine
    assert synced == [f"P {LEASE}", f"F 5 {LEASE}", f"F 6 {LEASE}"]
    assert j.path.read_text().splitlines()[-3:] == [f"F 6 {LEASE}", "N 6", "A 5 99"]


def test_a_malformed_line_in_the_middle_does_not_hide_the_lines_after_it(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_text(f"D 1 {LEASE}\nD x {LEASE}\nA 7 y\nD 2 {LEASE}\nA 1\n")
    assert Journal(path).open().owed == {2: LEASE}


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_closing_a_journal_that_never_held_the_lock_closes_no_descriptor_of_the_process(tmp_path: Path) -> None:
    """Never opened, or refused because another agent holds it: close() must leave every other
    descriptor of the process alone (stdout included) and not fail."""
    path = tmp_path / "j.log"
    holder = Journal(path)
    holder.open()
    before = _open_fds()
    Journal(tmp_path / "other.log").close()
    refused = Journal(path)
    with pytest.raises(JournalLocked):
        refused.open()
    refused.close()
    assert _open_fds() == before
    holder.close()


def test_compaction_writes_only_what_is_known(tmp_path: Path) -> None:
    """No lease line before the first pull, and a forwarded message is no longer in doubt."""
    path = tmp_path / "j.log"
    j = Journal(path)
    j.open()
    j.forwarding(1, LEASE)
    j.forwarded(1, LEASE)
    j.close()
    assert path.read_text() == f"D 1 {LEASE}\n"
    assert Journal(path).open() == type(j.state)(owed={1: LEASE}, lease_id=None, in_doubt=None)


def test_sync_makes_the_written_lines_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path / "j.log")
    j.open()
    j.forwarding(5, LEASE)
    j.forwarded(5, LEASE)
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(j.path.read_text().splitlines()[-1]), real(fd)))
    j.sync()
    assert synced == [f"D 5 {LEASE}"]


def test_compaction_starts_only_past_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    j.open()
    j.pulling(LEASE)
    while path.stat().st_size < COMPACT_BYTES - 200:
        j.acked([1])
    gap = COMPACT_BYTES - path.stat().st_size  # an "A" line of exactly this length reaches the limit
    mids = [1] * ((gap - 2) // 2) if gap % 2 == 0 else [10] + [1] * ((gap - 5) // 2)
    j.acked(mids)
    assert path.stat().st_size == COMPACT_BYTES  # at the limit: not compacted yet
    j.acked([1])
    assert path.read_text() == f"P {LEASE}\n"
    j.close()


def test_closing_twice_leaves_the_journal_and_every_other_descriptor_alone(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    j = Journal(path)
    j.open()
    j.pulling(LEASE)
    j.close()
    content, before = path.read_bytes(), _open_fds()
    j.close()
    assert (path.read_bytes(), _open_fds()) == (content, before)


def test_a_lock_on_descriptor_0_is_released_by_close(tmp_path: Path) -> None:
    """An agent started with stdin closed: the lock file takes descriptor 0, and close() must still
    release it."""
    path = tmp_path / "j.log"
    saved = os.dup(0)
    os.close(0)
    try:
        j = Journal(path)
        j.open()
        assert os.readlink("/proc/self/fd/0") == f"{path}.lock"
        j.close()
        k = Journal(path)
        k.open()  # would be refused if the first lock were still held
        k.close()
    finally:
        os.dup2(saved, 0)
        os.close(saved)
