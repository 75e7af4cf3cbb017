"""What the console's sessions keep in the ``meta`` table: the secret that signs every cookie (the
same for every process sharing the database) and the cookies revoked by a logout."""

from __future__ import annotations

import base64
import contextlib

from hookbay.errors import EncryptionKeyMissing
from hookbay.store import StoreInterface
from hookbay.store.sessions import revoke_session


async def shared_secret(store: StoreInterface, key: str, fresh: bytes) -> bytes:
    """The secret stored under ``key``, or ``fresh`` once stored there (sealed with the encryption
    key when one is set). A secret sealed with a key no longer configured is replaced, which only
    logs everyone out."""
    def sealed(raw: bytes) -> str:
        blob, _ = store.seal(raw, key)
        return base64.b64encode(blob).decode()

    with contextlib.suppress(Exception):  # another process inserted it between our check and insert (PostgreSQL)
        await store.set_meta_if_absent(key, sealed(fresh))
    stored = await store.get_meta(key)
    if stored is not None:
        with contextlib.suppress(EncryptionKeyMissing):
            return store.unseal(base64.b64decode(stored), key)
    await store.set_meta(key, sealed(fresh))
    return fresh


async def is_revoked(store: StoreInterface, key: str) -> bool:
    return await store.get_meta(key) is not None


async def revoke(store: StoreInterface, key: str, expires: int, prefix: str, now: int) -> None:
    """Record ``key`` as revoked until ``expires``; revocations under ``prefix`` whose cookies
    have expired by ``now`` are dropped."""
    await store.write(revoke_session(key, expires, prefix, now))
