"""Key rotation: re-sealing what was written under an older key (requests, signing secrets)."""

from __future__ import annotations

import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.errors import EncryptionKeyMissing
from hookbay.store import schema
from hookbay.store.audit import record
from hookbay.store.core import StoreCore

R = schema.requests


class EncryptionMixin(StoreCore):
    async def reencrypt(self, batch: int = 500, audit: AuditEntry | None = None) -> dict[str, int]:
        """Re-seal rows written under an older key with the active key, a batch per transaction,
        while the server keeps running (``hookbay keys rotate``). The audit entry goes with the last
        batch, naming the active key id (never the key)."""
        if self.keyring is None:
            raise EncryptionKeyMissing("No HOOKBAY_ENCRYPTION_KEY is configured")
        kid = self.keyring.active_kid
        SS = schema.source_secrets
        counts = {"requests": 0, "secrets": 0}
        while True:
            def step(conn: sa.Connection) -> int:
                rows = conn.execute(sa.select(R.c.id, R.c.body, R.c.headers, R.c.key_id).where(
                    sa.or_(R.c.key_id.is_(None), R.c.key_id != kid)).limit(batch)).mappings().all()
                for r in rows:
                    row = dict(r)
                    self.unseal_request_row(row)
                    self.seal_request_row(row)
                    conn.execute(R.update().where(R.c.id == r["id"]).values(
                        body=row["body"], headers=row["headers"], key_id=kid))
                return len(rows)

            n = await self.write(step)
            counts["requests"] += n
            if n < batch:
                break

        def secrets_step(conn: sa.Connection) -> int:
            rows = conn.execute(sa.select(SS).where(sa.or_(SS.c.key_id.is_(None), SS.c.key_id != kid))).mappings().all()
            for r in rows:
                plain = self.unseal(r["secret"], r["id"])
                blob, _ = self.seal(plain, r["id"])
                conn.execute(SS.update().where(SS.c.id == r["id"]).values(secret=blob, key_id=kid))
            if audit is not None:
                record(conn, audit.but(target=kid, changes=[
                    *audit.changes, f"active key: {kid}", f"requests re-encrypted: {counts['requests']}",
                    f"secrets re-encrypted: {len(rows)}"]))
            return len(rows)

        counts["secrets"] = await self.write(secrets_step)
        return counts
