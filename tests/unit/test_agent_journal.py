"""The relay agent's journal on a real file: what a killed agent left behind is read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookbay.agent_journal import COMPACT_BYTES, Journal, JournalLocked

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
