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


def test_a_sealed_value_moved_to_another_row_does_not_open(live_server_factory, db_url: str,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    """Issue #19 row 5: each sealed value is bound to its row by the AEAD's associated data (the
    row's id). Someone with write access to the database (not the key) who copies one request's
    sealed body and headers into another row, or one source's sealed signing secret into another's,
    must get an error when it is read, never the other row's data."""
    live = live_server_factory(db_url, encryption_key=f"k1:{generate_key()}")
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    victim = live.client.post(url, content=SECRET_BODY, headers={"Content-Type": "application/json",
                                                                 "Authorization": "Basic dmljdGltOnB3"}).json()
    other = live.client.post(url, content=b'{"email":"other@example.com"}', headers={
        "Content-Type": "application/json", "Authorization": "Basic b3RoZXI6cHc="}).json()
    eng = _engine(db_url)
    try:
        with eng.begin() as c:
            row = c.execute(sa.text("SELECT body, headers FROM requests WHERE id = :i"),
                            {"i": victim["request_id"]}).one()
            c.execute(sa.text("UPDATE requests SET body = :b WHERE id = :i"),
                      {"b": bytes(row.body), "i": other["request_id"]})
    finally:
        eng.dispose()
    with live.admin() as c:
        assert orjson.loads(c.get(f"/api/v1/requests/{victim['request_id']}").json()["body"])["card"] == "4111"
        for path in (f"/api/v1/requests/{other['request_id']}", f"/api/v1/requests/{other['request_id']}/body"):
            r = c.get(path)
            assert r.status_code == 500 and r.json()["error"]["code"] == "encryption_key_missing", r.text
            assert "4111" not in r.text and "secret.person" not in r.text
        eng = _engine(db_url)
        try:
            with eng.begin() as conn:
                conn.execute(sa.text("UPDATE requests SET body = NULL, headers = :h WHERE id = :i"),
                             {"h": row.headers, "i": other["request_id"]})
        finally:
            eng.dispose()
        r = c.get(f"/api/v1/requests/{other['request_id']}")
        assert r.status_code == 500 and "dmljdGltOnB3" not in r.text

    from hookbay.store import open_store

    async def swapped_secrets() -> tuple[str, str, dict[str, list[str]]]:
        store = open_store(make_settings(db_url, tmp_path, encryption_key=live.settings.encryption_key))
        await store.start()
        try:
            a, _ = await store.create_source(name="a", client_id="acme", config={}, secret="secret-of-a-123")
            b, _ = await store.create_source(name="b", client_id="acme", config={}, secret="secret-of-b-456")

            def swap(conn: sa.Connection) -> None:
                blob = conn.execute(sa.text("SELECT secret FROM source_secrets WHERE source_id = :s"),
                                    {"s": a.id}).scalar_one()
                conn.execute(sa.text("UPDATE source_secrets SET secret = :b WHERE source_id = :s"),
                             {"b": blob, "s": b.id})

            await store.write(swap)
            found = await store.source_secrets()
            return a.id, b.id, {k: [s for s, _ in v] for k, v in found.items()}
        finally:
            await store.close()

    a_id, b_id, found = asyncio.run(swapped_secrets())
    assert found[a_id] == ["secret-of-a-123"]
    assert b_id not in found  # b's row now holds a's sealed secret: it opens for nobody
