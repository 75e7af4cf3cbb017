"""Encryption at rest: sealed values round-trip, are bound to their AAD, survive key rotation, and
fail loudly (never with garbage, never echoing key material) when tampered or misconfigured."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from hookbay.crypto import (
    MAGIC,
    DecryptError,
    Keyring,
    MissingKeyError,
    generate_key,
    open_value,
    seal_value,
)


def _ring(text: str) -> Keyring:
    ring = Keyring.parse(text)
    assert ring is not None
    return ring


K_A, K_B = generate_key(), generate_key()
RING = _ring(f"a:{K_A}")


# --- sealing -------------------------------------------------------------------------------------


def test_round_trip_and_layout() -> None:
    blob = RING.encrypt(b"hello body", b"req_1")
    assert blob.startswith(MAGIC + bytes([1]) + b"a")
    # magic + kid len + kid + 12-byte nonce + ciphertext (same length as plaintext) + 16-byte tag
    assert len(blob) == len(MAGIC) + 1 + 1 + 12 + len(b"hello body") + 16
    assert b"hello body" not in blob
    assert RING.decrypt(blob, b"req_1") == b"hello body"
    assert Keyring.is_encrypted(blob) and not Keyring.is_encrypted(b"hello body")
    assert RING.kid_of(blob) == "a" and RING.kid_of(b"plain") is None


def test_empty_plaintext_and_default_aad() -> None:
    assert RING.decrypt(RING.encrypt(b"")) == b""


def test_nonces_are_fresh() -> None:
    assert RING.encrypt(b"same", b"x") != RING.encrypt(b"same", b"x")


def test_format_is_interoperable() -> None:
    """The documented layout, built by hand with plain AESGCM, must open: stored rows outlive code."""
    key = os.urandom(32)
    nonce = os.urandom(12)
    blob = MAGIC + bytes([4]) + b"prod" + nonce + AESGCM(key).encrypt(nonce, b"secret", b"aad")
    ring = _ring(f"prod:{base64.urlsafe_b64encode(key).decode()}")
    assert ring.decrypt(blob, b"aad") == b"secret"


def test_wrong_aad_is_rejected() -> None:
    blob = RING.encrypt(b"body of req_1", b"req_1")
    with pytest.raises(DecryptError):
        RING.decrypt(blob, b"req_2")
    with pytest.raises(DecryptError):
        RING.decrypt(blob)


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_tampered_byte_is_rejected(where: str) -> None:
    blob = bytearray(RING.encrypt(b"0123456789", b"id"))
    header = len(MAGIC) + 1 + 1
    index = {"nonce": header, "ciphertext": header + 12 + 3, "tag": len(blob) - 1}[where]
    blob[index] ^= 0x01
    with pytest.raises(DecryptError):
        RING.decrypt(bytes(blob), b"id")


def test_same_kid_different_key_is_rejected() -> None:
    blob = RING.encrypt(b"x")
    with pytest.raises(DecryptError):
        _ring(f"a:{K_B}").decrypt(blob)


@pytest.mark.parametrize("cut", [len(MAGIC), len(MAGIC) + 1, len(MAGIC) + 2, len(MAGIC) + 2 + 11, -1])
def test_truncated_blob_is_rejected(cut: int) -> None:
    blob = RING.encrypt(b"", b"id")
    with pytest.raises(DecryptError):
        RING.decrypt(blob[:cut], b"id")


def test_malformed_header_is_rejected() -> None:
    body = os.urandom(12 + 16)
    for blob in (MAGIC + b"\x00" + body, MAGIC + b"\x02a!" + body, MAGIC + b"\x11" + b"a" * 17 + body):
        assert Keyring.kid_of(blob) is None
        with pytest.raises(DecryptError):
            RING.decrypt(blob)
        with pytest.raises(DecryptError):
            open_value(None, blob)


def test_decrypt_refuses_plaintext() -> None:
    with pytest.raises(DecryptError):
        RING.decrypt(b'{"plain": true}')


# --- rotation and missing keys ---------------------------------------------------------------------


def test_rotation() -> None:
    old_ring = _ring(f"old:{K_A}")
    old_blob = old_ring.encrypt(b"legacy row", b"r1")
    rotated = _ring(f"new:{K_B},old:{K_A}")
    assert rotated.active_kid == "new" and rotated.kids == ("new", "old")
    assert rotated.decrypt(old_blob, b"r1") == b"legacy row"
    fresh = rotated.encrypt(b"new row", b"r2")
    assert rotated.kid_of(fresh) == "new"
    assert rotated.decrypt(fresh, b"r2") == b"new row"
    with pytest.raises(MissingKeyError):
        old_ring.decrypt(fresh, b"r2")


def test_missing_key_names_kid_without_key_material() -> None:
    blob = _ring(f"k0:{K_A}").encrypt(b"x")
    with pytest.raises(MissingKeyError) as exc:
        _ring(f"k2:{K_B}").decrypt(blob)
    assert exc.value.kid == "k0"
    assert str(exc.value) == "encryption key 'k0' is not configured"
    assert K_A not in str(exc.value) and K_B not in str(exc.value)
    with pytest.raises(MissingKeyError, match="'k0'"):
        open_value(None, blob)


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_empty_means_no_encryption() -> None:
    assert Keyring.parse(None) is None
    assert Keyring.parse("") is None
    assert Keyring.parse("   ") is None


def test_parse_bare_key_gets_k1() -> None:
    ring = _ring(K_A)
    assert ring.active_kid == "k1" and ring.kids == ("k1",)
    assert _ring(f"k1:{K_A}").decrypt(ring.encrypt(b"x")) == b"x"


def test_parse_accepts_both_alphabets_padding_and_whitespace() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF]) * 10 + b"\xfe\xff"  # encodes to '+' and '/' (or '-' and '_')
    std, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    assert "+" in std and "-" in url
    blob = _ring(f"s:{std}").encrypt(b"x")
    assert _ring(f" s : {url.rstrip('=')} , other:{K_B}, ").decrypt(blob) == b"x"


def test_repr_hides_keys() -> None:
    ring = _ring(f"a:{K_A},b:{K_B}")
    assert K_A not in repr(ring) and "'a'" in repr(ring)


SHORT = base64.b64encode(os.urandom(16)).decode()
LONG = base64.b64encode(os.urandom(48)).decode()


@pytest.mark.parametrize(
    ("text", "secret", "match"),
    [
        (f"a:{SHORT}", SHORT, "32 bytes"),
        (f"a:{LONG}", LONG, "32 bytes"),
        ("a:not*base64!!zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "not*base64", "base64"),
        (f"a:{K_A[:-2]}?=", K_A[:-2], "base64"),
        (f"a:{K_A[:-2]}", K_A[:-2], "32 bytes"),
        ("a:", K_A, "base64"),
        (f"a:{K_A},a:{K_B}", K_A, "more than once"),
        (f"{K_A},k1:{K_B}", K_A, "more than once"),
        (f"{K_A},{K_B}", K_A, "more than once"),
        (f"bad kid:{K_A}", K_A, "key id"),
        (f"{'x' * 17}:{K_A}", K_A, "key id"),
        (f":{K_A}", K_A, "key id"),
        (" , ,", ",", "no keys"),
    ],
)
def test_parse_errors_do_not_leak_keys(text: str, secret: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as exc:
        Keyring.parse(text)
    message = str(exc.value)
    assert secret not in message
    assert K_B not in message
    assert exc.value.__cause__ is None


def test_generate_key() -> None:
    keys = {generate_key() for _ in range(4)}
    assert len(keys) == 4
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


# --- helpers that tolerate plaintext rows ----------------------------------------------------------


def test_seal_and_open_without_keyring() -> None:
    assert seal_value(None, b"raw", b"id") == b"raw"
    assert open_value(None, b"raw", b"id") == b"raw"


def test_seal_and_open_with_keyring() -> None:
    sealed = seal_value(RING, b"raw", b"id")
    assert sealed != b"raw" and Keyring.is_encrypted(sealed)
    assert open_value(RING, sealed, b"id") == b"raw"
    assert open_value(RING, b"pre-encryption row", b"id") == b"pre-encryption row"
    with pytest.raises(DecryptError):
        open_value(RING, sealed, b"other-id")


# --- properties ------------------------------------------------------------------------------------


ROTATED = _ring(f"new:{K_B},a:{K_A}")


@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=256))
def test_round_trip_property(plaintext: bytes, aad: bytes) -> None:
    blob = RING.encrypt(plaintext, aad)
    assert RING.decrypt(blob, aad) == plaintext
    assert open_value(RING, seal_value(RING, plaintext, aad), aad) == plaintext
    assert ROTATED.decrypt(blob, aad) == plaintext
    assert RING.kid_of(blob) == "a"


@given(plaintext=st.binary(max_size=512), aad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_aad_binding_property(plaintext: bytes, aad: bytes, other: bytes) -> None:
    blob = RING.encrypt(plaintext, aad)
    if other != aad:
        with pytest.raises(DecryptError):
            RING.decrypt(blob, other)


# --- issue #19: what the mutation run found untested ----------------------------------------------

KEY = os.urandom(32)


@pytest.mark.parametrize(("keys", "message"), [
    ([("bad kid", KEY)], "encryption key #1: key id must match [A-Za-z0-9_-]{1,16}"),
    ([("a", KEY), ("b!", KEY)], "encryption key #2: key id must match [A-Za-z0-9_-]{1,16}"),
    ([(7, KEY)], "encryption key #1: key id must match [A-Za-z0-9_-]{1,16}"),
    ([("a", KEY), ("a", KEY)], "encryption key id 'a' appears more than once"),
    ([("a", KEY[:16])], "encryption key 'a' must be 32 bytes (AES-256), got 16"),
    ([], "no encryption keys configured"),
])
def test_keyring_errors_say_which_key(keys: list, message: str) -> None:
    """The operator fixes HOOKBAY_ENCRYPTION_KEY from this message: it names the entry by position or id."""
    with pytest.raises(ValueError) as e:
        Keyring(keys)
    assert str(e.value) == message


@pytest.mark.parametrize(("text", "message"), [
    (f"a:{K_A},b!:{K_B}", "encryption key entry #2: key id must match [A-Za-z0-9_-]{1,16}"),
    (f"bad kid:{K_A}", "encryption key entry #1: key id must match [A-Za-z0-9_-]{1,16}"),
    ("a:not*base64", "encryption key 'a': key is not valid base64"),
    (f"a:{K_A}:x", "encryption key 'a': key is not valid base64"),
    (" , ,", "encryption key setting contains no keys"),
])
def test_parse_errors_say_which_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        Keyring.parse(text)
    assert str(e.value) == message


def test_parse_accepts_an_extra_padding_sign() -> None:
    """Padding is dropped and recomputed, so a key pasted with one '=' too many still works."""
    ring = _ring(f"a:{K_A}=")
    assert ring.decrypt(RING.encrypt(b"x")) == b"x"
    with pytest.raises(ValueError, match="not valid base64"):
        Keyring.parse(f"a:={K_A}")  # padding in front is no padding


def test_decrypt_errors_say_what_is_wrong() -> None:
    with pytest.raises(DecryptError) as e:
        RING.decrypt(b"plain")
    assert str(e.value) == "value is not encrypted"
    with pytest.raises(DecryptError) as e:
        RING.decrypt(MAGIC)
    assert str(e.value) == "encrypted value is truncated"
    with pytest.raises(DecryptError) as e:
        RING.decrypt(RING.encrypt(b"x", b"row-1"), b"row-2")
    assert str(e.value) == "encrypted value failed authentication with key 'a' (tampered, or bound to other data)"


def test_header_errors_say_what_is_wrong() -> None:
    header = MAGIC + bytes([1]) + b"a"
    for blob, message in ((MAGIC + bytes([2]) + b"a!" + b"\0" * 40, "encrypted value has a malformed key id"),
                          (header + b"\0" * 27, "encrypted value is truncated")):  # a nonce and a tag need 28
        with pytest.raises(DecryptError) as e:
            RING.decrypt(blob)
        assert str(e.value) == message


def test_a_key_of_impossible_length_is_not_valid_base64() -> None:
    with pytest.raises(ValueError) as e:
        Keyring.parse("a:" + "A" * 45)
    assert str(e.value) == "encryption key 'a': key is not valid base64"


def test_seal_and_open_default_to_no_associated_data() -> None:
    assert RING.decrypt(seal_value(RING, b"x")) == b"x"
    assert open_value(RING, RING.encrypt(b"x")) == b"x"
