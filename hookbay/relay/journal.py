"""The relay agent's journal: what it forwarded but the server has not acked yet, on local disk.

Without it a killed agent forgets the acks it still owed: those messages are delivered a second
time, and the head of the queue waits out the dead agent's lease first. One line per event,
appended in order:

* ``P <lease>``: the lease id of the next pull, written before the pull. A restarted agent pulls
  with it first, and the server hands the dead agent's messages back at once (a pull naming the
  head's lease re-leases it).
* ``F <id> <lease>``: about to forward this message (fsynced, with the ``D`` before it, before the
  forward starts).
* ``D <id> <lease>``: the application answered 2xx; the ack is owed. Replayed on start.
* ``N <id>``: the forward failed (the message is nacked, not owed).
* ``A <id> <id> …``: the server took these acks. Not fsynced: a lost ``A`` only means an ack that
  is sent again and answers ``already_acked``.

The one window left: a kill (or power loss) after the application took a message and before the
``D`` line reached the file. The journal then still has that message's ``F`` line, so the restarted
agent knows which single message is in doubt and forwards it again with
``X-Hookbay-Possible-Duplicate: 1``: at most one repeat per crash, always marked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

COMPACT_BYTES = 64 * 1024
LEASE_ID = re.compile(r"^[A-Za-z0-9_-]{8,40}$")  # what the server accepts as a pull's lease_id


class JournalLocked(Exception):
    pass


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hookbay-agent"


def default_journal(state_dir: Path, server: str, token: str) -> Path:
    """One journal per server and token, so agents for different sources on one host never share."""
    key = hashlib.sha256(f"{server.rstrip('/')}\n{token}".encode()).hexdigest()[:16]
    return state_dir / f"journal-{key}.log"


@dataclass
class Recovered:
    owed: dict[int, str] = field(default_factory=dict)  # message id -> lease id: forwarded, ack not stored
    lease_id: str | None = None  # the last pull's lease
    in_doubt: int | None = None  # forward started, outcome never journaled


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = Recovered()
        self._fd = -1
        self._lock_fd = -1
        self._size = 0

    def open(self) -> Recovered:
        """Lock the journal (one agent per file), read it back and compact it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise JournalLocked(f"another agent is using the journal {self.path}") from None
        with contextlib.suppress(FileNotFoundError):
            self._replay(self.path.read_bytes())
        recovered = Recovered(dict(self.state.owed), self.state.lease_id, self.state.in_doubt)
        self.compact()
        return recovered

    def _replay(self, data: bytes) -> None:
        st = self.state
        for raw in data.split(b"\n"):
            parts = raw.decode("ascii", "replace").split()
            try:
                kind = parts[0] if parts else ""
                if kind == "P" and len(parts) == 2 and LEASE_ID.match(parts[1]):
                    st.lease_id = parts[1]
                elif kind == "F" and len(parts) == 3:
                    st.in_doubt = int(parts[1])
                elif kind == "D" and len(parts) == 3 and LEASE_ID.match(parts[2]):
                    st.owed[int(parts[1])] = parts[2]
                    if st.in_doubt == int(parts[1]):
                        st.in_doubt = None
                elif kind == "N" and len(parts) == 2:
                    if st.in_doubt == int(parts[1]):
                        st.in_doubt = None
                elif kind == "A":
                    for p in parts[1:]:
                        st.owed.pop(int(p), None)
            except ValueError:  # a torn last line (power loss mid-write): it never counted
                continue

    def _append(self, line: str, sync: bool) -> None:
        data = line.encode()
        os.write(self._fd, data)
        self._size += len(data)
        if sync:
            os.fsync(self._fd)

    def pulling(self, lease_id: str) -> None:
        self.state.lease_id = lease_id
        self._append(f"P {lease_id}\n", sync=True)

    def forwarding(self, mid: int, lease_id: str) -> None:
        """Durable before the forward starts (and with it every ``D`` before it)."""
        self.state.in_doubt = mid
        self._append(f"F {mid} {lease_id}\n", sync=True)

    def forwarded(self, mid: int, lease_id: str) -> None:
        """Written at once (a kill -9 cannot lose it); fsynced with the next ``F`` or :meth:`sync`."""
        self.state.owed[mid] = lease_id
        self.state.in_doubt = None
        self._append(f"D {mid} {lease_id}\n", sync=False)

    def failed(self, mid: int) -> None:
        self.state.in_doubt = None
        self._append(f"N {mid}\n", sync=False)

    def sync(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)

    def acked(self, mids: list[int]) -> None:
        for mid in mids:
            self.state.owed.pop(mid, None)
        if mids:
            self._append("A " + " ".join(map(str, mids)) + "\n", sync=False)
        if self._size > COMPACT_BYTES:
            self.compact()

    def compact(self) -> None:
        """Rewrite the journal as its current state (a few lines), atomically."""
        st = self.state
        lines = [f"P {st.lease_id}\n"] if st.lease_id else []
        lines += [f"D {mid} {lid}\n" for mid, lid in st.owed.items()]
        if st.in_doubt is not None:
            lines.append(f"F {st.in_doubt} -\n")
        data = "".join(lines).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(data)

    def close(self) -> None:
        if self._fd >= 0:
            self.compact()
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
