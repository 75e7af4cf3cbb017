"""Encryption at rest: bodies, sensitive headers and signing secrets sealed with AES-GCM; key
rotation re-encrypts in batches; a missing key is a clear error, never garbage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import sqlalchemy as sa

from hookbay.crypto import generate_key
from tests.conftest import ADMIN_TOKEN, make_settings

SECRET_BODY = b'{"email":"secret.person@example.com","card":"4111"}'


def _engine(db_url: str) -> sa.Engine:
    return sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))


def test_bodies_headers_and_secrets_are_sealed(live_server_factory, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    k1 = f"k1:{generate_key()}"
    live = live_server_factory(db_url, encryption_key=k1)
    src = live.create_source(config={"signature": {"scheme": "github"}}, secret="gh-secret-value-1")
    import hashlib
    import hmac

    sig = "sha256=" + hmac.new(b"gh-secret-value-1", SECRET_BODY, hashlib.sha256).hexdigest()
    r = live.client.post(f"/V1/Data/{src['token']}", content=SECRET_BODY,
                         headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig,
                                  "Authorization": "Basic c2VjcmV0OnBhc3M="})
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    eng = _engine(db_url)
    with eng.connect() as c:
        row = c.execute(sa.text("SELECT body, headers, key_id FROM requests WHERE id = :i"), {"i": rid}).one()
        secret_blob = c.execute(sa.text("SELECT secret FROM source_secrets")).scalar()
    eng.dispose()
    assert row.key_id == "k1"
    assert b"secret.person" not in bytes(row.body)
    assert "c2VjcmV0OnBhc3M=" not in row.headers and '"enc:' in row.headers
    assert b"gh-secret-value-1" not in bytes(secret_blob)
    with live.admin() as c:
        detail = c.get(f"/api/v1/requests/{rid}").json()
        assert detail["body"] == SECRET_BODY.decode()
        assert dict(detail["headers"])["authorization"] == "Basic c2VjcmV0OnBhc3M="
        assert c.get(f"/api/v1/requests/{rid}/body").content == SECRET_BODY
    receipt = live.wait_state(rid)
    assert receipt["records"][0]["fields"]["email"] == "secret.person@example.com"


def test_key_rotation_and_missing_key(db_url: str, tmp_path: Path, live_server_factory) -> None:  # type: ignore[no-untyped-def]
    old, new = f"old:{generate_key()}", f"new:{generate_key()}"
    live = live_server_factory(db_url, encryption_key=old)
    src = live.create_source()
    rids = [live.client.post(f"/V1/Data/{src['token']}", content=SECRET_BODY,
                             headers={"Content-Type": "application/json"}).json()["request_id"] for _ in range(7)]

    from hookbay.store import open_store

    async def rotate() -> dict[str, int]:
        store = open_store(make_settings(db_url, tmp_path, encryption_key=f"{new},{old}"))
        await store.start()
        try:
            return await store.reencrypt(batch=3)
        finally:
            await store.close()

    counts = asyncio.run(rotate())
    assert counts["requests"] == 7
    eng = _engine(db_url)
    with eng.connect() as c:
        kids = set(c.execute(sa.text("SELECT key_id FROM requests")).scalars())
    eng.dispose()
    assert kids == {"new"}

    only_new = live_server_factory(db_url, encryption_key=new)
    with httpx.Client(base_url=only_new.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        assert orjson.loads(c.get(f"/api/v1/requests/{rids[0]}").json()["body"])["card"] == "4111"
    only_old = live_server_factory(db_url, encryption_key=old)
    with httpx.Client(base_url=only_old.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:
        r = c.get(f"/api/v1/requests/{rids[0]}")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "encryption_key_missing"
    assert "4111" not in r.text
