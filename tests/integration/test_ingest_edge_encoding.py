"""``Content-Encoding`` bodies (issue #15): decoded before the checks and the parser, stored exactly as
received with the encoding recorded, and bounded while decoding — a zip bomb is a 413 after the
server has produced no more than the body limit, with no memory spike (checked on a real
``hookbay serve`` process: its peak RSS, ``VmHWM``)."""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import brotli
import httpx
import orjson
import pytest

from tests.conftest import ADMIN_TOKEN, cli_migrate, free_port

BODY = orjson.dumps({"email": "ann@example.com", "name": "Ann", "items": list(range(50))})


def _stored(live: Any, rid: str) -> dict[str, Any]:
    with live.admin() as c:
        r = c.get(f"/api/v1/requests/{rid}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some senders send it
    ("br", brotli.compress),
])
def test_encoded_body_is_parsed_and_stored_as_received(live: Any, encoding: str, compress: Any) -> None:
    src = live.create_source(config={"format": "json"})
    wire = compress(BODY)
    r = live.client.post(f"/V1/Data/{src['token']}", content=wire,
                         headers={"Content-Type": "application/json", "Content-Encoding": encoding})
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    receipt = live.wait_state(rid)
    assert receipt["state"] == "processed", receipt
    row = _stored(live, rid)
    assert base64.b64decode(row["body_base64"]) == wire
    assert row["content_encoding"] == encoding
    flat = orjson.dumps(row["records"])
    assert b"ann@example.com" in flat


def test_a_fixed_format_is_checked_on_the_decoded_body(live: Any) -> None:
    """A JSON-only source refuses gzip of something that is not JSON, and accepts gzip of JSON."""
    src = live.create_source(config={"format": "json"})
    url = f"/V1/Data/{src['token']}"
    h = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert live.client.post(url, content=gzip.compress(b"not json"), headers=h).status_code == 400
    assert live.client.post(url, content=gzip.compress(b'{"a": 1}'), headers=h).status_code == 200


def test_bad_and_unknown_encodings_explain_themselves(live: Any) -> None:
    src = live.create_source()
    url = f"/V1/Data/{src['token']}"
    r = live.client.post(url, content=gzip.compress(BODY)[:20],
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_encoding"
    r = live.client.post(url, content=BODY, headers={"Content-Type": "application/json", "Content-Encoding": "zstd"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_encoding"
    r = live.client.post(url, content=BODY, headers={"Content-Type": "application/json", "Content-Encoding": "identity"})
    assert r.status_code == 200


def test_decoded_size_counts_against_the_limit(live: Any) -> None:
    src = live.create_source(config={"max_body_bytes": 1000})
    url = f"/V1/Data/{src['token']}"
    big = orjson.dumps({"pad": "x" * 2000})
    r = live.client.post(url, content=gzip.compress(big),
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["error"]["detail"]["limit_bytes"] == 1000
    with live.admin() as c:
        items = c.get("/api/v1/requests", params={"source_id": src["id"]}).json()["items"]
    assert [(i["verdict"], i["rule"]) for i in items] == [("rejected", "body_size")]


def _vmhwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_zip_bomb_is_413_without_a_memory_spike(tmp_path: Path, encoding: str) -> None:
    """10 MB of zeros (~10 KB gzip) and 200 MB (~200 KB gzip): both 413 under the default 1 MiB limit;
    the server's peak RSS grows by a few MiB (allocator noise, the stored rejected body), not by the bomb."""
    port = free_port()
    env = dict(os.environ)
    env.update({"HOOKBAY_DATA_DIR": str(tmp_path), "HOOKBAY_PORT": str(port), "HOOKBAY_ADMIN_TOKEN": ADMIN_TOKEN,
                "HOOKBAY_LOG_LEVEL": "warning", "HOOKBAY_DATABASE_URL": f"sqlite:///{tmp_path / 'bomb.db'}"})
    cli_migrate(env)
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "hookbay", "serve"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    compress = gzip.compress if encoding == "gzip" else brotli.compress
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as c:
            for _ in range(300):
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
            r = c.post("/api/v1/sources", json={"name": "bomb", "client_id": "acme"},
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            url = f"/V1/Data/{r.json()['token']}"
            h = {"Content-Type": "application/json", "Content-Encoding": encoding}
            ok = c.post(url, content=compress(orjson.dumps({"pad": "x" * 900_000})), headers=h)
            assert ok.status_code == 200, ok.text  # warm: a body just under the limit decodes and is stored
            before = _vmhwm_kib(proc.pid)
            for size in (10_000_000, 200_000_000):
                bomb = compress(b"\0" * size)
                assert len(bomb) < 1 << 20
                r = c.post(url, content=bomb, headers=h)
                assert r.status_code == 413, r.text
                assert r.json()["error"]["detail"] == {"limit_bytes": 1 << 20, "decoded": True}
            grew_mib = (_vmhwm_kib(proc.pid) - before) / 1024
            print(f"{encoding}: peak RSS grew by {grew_mib:.1f} MiB over two bombs")
            assert grew_mib < 32, f"peak RSS grew by {grew_mib:.1f} MiB"  # decoding the 200 MB bomb whole: > 190
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_signature_of_a_compressed_body(live: Any) -> None:
    """GitHub-style HMAC over the payload (what providers sign) or over the bytes on the wire: both
    take the secret; anything else is 401."""
    import hashlib
    import hmac

    secret = "s3cret-github-hook"
    src = live.create_source(config={"signature": {"scheme": "github"}}, secret=secret)
    url = f"/V1/Data/{src['token']}"
    wire = gzip.compress(BODY)

    def sig(data: bytes) -> str:
        return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()

    h = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert live.client.post(url, content=wire, headers={**h, "X-Hub-Signature-256": sig(BODY)}).status_code == 200
    assert live.client.post(url, content=wire, headers={**h, "X-Hub-Signature-256": sig(wire)}).status_code == 200
    bad = live.client.post(url, content=wire, headers={**h, "X-Hub-Signature-256": sig(b"other")})
    assert bad.status_code == 401
