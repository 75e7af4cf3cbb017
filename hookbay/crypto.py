"""AES-256-GCM for data at rest (raw bodies, sensitive header values, signing secrets).

Every sealed value names the key that sealed it, so keys can rotate: the first configured key
encrypts, the others only decrypt until ``hookbay keys rotate`` has re-sealed everything.
A missing key or a tampered value is an error, never garbage.

Sealed value layout::

    b"\\x00hbe1" | kid length (1 byte) | kid (ASCII) | nonce (12 bytes) | ciphertext || tag (16 bytes)

The leading NUL byte keeps a sealed value from being mistaken for text, and the magic lets
rows written before encryption was enabled (plaintext) coexist with sealed ones.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MAGIC",
    "DecryptError",
    "Keyring",
    "MissingKeyError",
    "generate_key",
    "open_value",
    "seal_value",
]

MAGIC = b"\x00hbe1"
KEY_LEN = 32  # AES-256
NONCE_LEN = 12  # the GCM standard size; random nonces are safe far beyond our per-key volume
TAG_LEN = 16
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_KID_BYTES_RE = re.compile(rb"[A-Za-z0-9_-]{1,16}")
# Either alphabet (or a mix): operators paste keys from `openssl rand -base64` or from urlsafe tools.
_B64_RE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_URLSAFE_TO_STD = str.maketrans("-_", "+/")
_DEFAULT_KID = "k1"


class MissingKeyError(Exception):
    """A sealed value names a key that is not configured: the operator must add it back, so say which."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"encryption key '{kid}' is not configured")
        self.kid = kid


class DecryptError(Exception):
    """A sealed value failed authentication or is malformed; raised instead of returning garbage."""


def generate_key() -> str:
    """A fresh random 32-byte key in standard base64, ready for ``HOOKBAY_ENCRYPTION_KEY``."""
    return base64.b64encode(os.urandom(KEY_LEN)).decode("ascii")


def _decode_key(material: str, where: str) -> bytes:
    """Decode base64 strictly: lenient decoding would silently drop stray characters from a pasted key.

    Error messages name the entry (``where``) but never echo the material itself.
    """
    text = material.strip()
    if not text or not _B64_RE.fullmatch(text):
        raise ValueError(f"{where}: key is not valid base64")
    text = text.rstrip("=").translate(_URLSAFE_TO_STD)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: key is not valid base64") from None
    if len(key) != KEY_LEN:
        raise ValueError(f"{where}: key must be {KEY_LEN} bytes (AES-256), got {len(key)}")
    return key


class Keyring:
    """The configured keys: the first (active) one seals, all of them open, so old rows stay readable mid-rotation.

    One ``AESGCM`` object per key is built up front because the ingest hot path seals every body.
    """

    __slots__ = ("_aead", "_active", "_header", "active_kid", "kids")

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        aead: dict[str, AESGCM] = {}
        for n, (kid, key) in enumerate(keys, 1):
            if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
                raise ValueError(f"encryption key #{n}: key id must match [A-Za-z0-9_-]{{1,16}}")
            if kid in aead:
                raise ValueError(f"encryption key id '{kid}' appears more than once")
            if len(key) != KEY_LEN:
                raise ValueError(f"encryption key '{kid}' must be {KEY_LEN} bytes (AES-256), got {len(key)}")
            aead[kid] = AESGCM(bytes(key))
        if not aead:
            raise ValueError("no encryption keys configured")
        self._aead = aead
        self.kids: tuple[str, ...] = tuple(aead)
        self.active_kid: str = self.kids[0]
        self._active = aead[self.active_kid]
        kid_b = self.active_kid.encode("ascii")
        self._header = MAGIC + bytes([len(kid_b)]) + kid_b

    def __repr__(self) -> str:  # never show key material
        return f"Keyring(active_kid={self.active_kid!r}, kids={self.kids!r})"

    @classmethod
    def parse(cls, text: str | None) -> Keyring | None:
        """Parse ``kid:base64key[,kid:base64key...]`` (a bare key gets kid ``k1``); None/blank means no encryption.

        A value made only of separators is an error rather than "no encryption", since the operator
        evidently meant to configure keys.
        """
        if text is None or not text.strip():
            return None
        keys: list[tuple[str, bytes]] = []
        seen: set[str] = set()
        entries = [e.strip() for e in text.split(",")]
        for n, entry in enumerate((e for e in entries if e), 1):
            kid, sep, material = entry.partition(":")
            kid = kid.strip()
            if not sep:
                kid, material = _DEFAULT_KID, entry
            if not _KID_RE.fullmatch(kid):
                # Don't echo it: a mangled entry may have key material where the kid should be.
                raise ValueError(f"encryption key entry #{n}: key id must match [A-Za-z0-9_-]{{1,16}}")
            if kid in seen:
                raise ValueError(f"encryption key id '{kid}' appears more than once")
            seen.add(kid)
            keys.append((kid, _decode_key(material, f"encryption key '{kid}'")))
        if not keys:
            raise ValueError("encryption key setting contains no keys")
        return cls(keys)

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Seal with the active key. ``aad`` binds the value to its row so it can't be swapped into another."""
        nonce = os.urandom(NONCE_LEN)
        return b"".join((self._header, nonce, self._active.encrypt(nonce, plaintext, aad)))

    def decrypt(self, blob: bytes, aad: bytes = b"") -> bytes:
        """Open a sealed value; unknown kid -> MissingKeyError, anything inauthentic -> DecryptError."""
        if not is_encrypted(blob):
            raise DecryptError("value is not encrypted")
        kid, body_start = _parse_header(blob)
        aead = self._aead.get(kid)
        if aead is None:
            raise MissingKeyError(kid)
        nonce = blob[body_start : body_start + NONCE_LEN]
        try:
            return aead.decrypt(nonce, blob[body_start + NONCE_LEN :], aad)
        except InvalidTag:
            raise DecryptError(
                f"encrypted value failed authentication with key '{kid}' (tampered, or bound to other data)"
            ) from None

    @staticmethod
    def is_encrypted(blob: bytes) -> bool:
        """Whether ``blob`` carries the sealed-value magic (plaintext rows predate encryption)."""
        return is_encrypted(blob)

    @staticmethod
    def kid_of(blob: bytes) -> str | None:
        """The key id that sealed ``blob``, or None for plaintext or a malformed header."""
        if not is_encrypted(blob):
            return None
        try:
            return _parse_header(blob)[0]
        except DecryptError:
            return None


def is_encrypted(blob: bytes) -> bool:
    """Module-level twin of :meth:`Keyring.is_encrypted`, usable when no keyring is configured."""
    return blob[: len(MAGIC)] == MAGIC


def _parse_header(blob: bytes) -> tuple[str, int]:
    """Return (kid, offset of the nonce); reject malformed or truncated values before touching a key."""
    at = len(MAGIC)
    if len(blob) <= at:
        raise DecryptError("encrypted value is truncated")
    n = blob[at]
    kid_b = bytes(blob[at + 1 : at + 1 + n])
    if not _KID_BYTES_RE.fullmatch(kid_b):
        raise DecryptError("encrypted value has a malformed key id")
    body_start = at + 1 + n
    if len(blob) < body_start + NONCE_LEN + TAG_LEN:
        raise DecryptError("encrypted value is truncated")
    return kid_b.decode("ascii"), body_start


def seal_value(keyring: Keyring | None, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Encrypt when a keyring is configured, else store as-is (encryption at rest is opt-in)."""
    return plaintext if keyring is None else keyring.encrypt(plaintext, aad)


def open_value(keyring: Keyring | None, blob: bytes, aad: bytes = b"") -> bytes:
    """Read a stored value that may predate encryption: plaintext passes through, sealed values are opened.

    A sealed value with no keyring configured raises MissingKeyError naming its kid, rather than
    leaking ciphertext to callers as if it were the data; a malformed one raises DecryptError.
    """
    if not is_encrypted(blob):
        return blob
    if keyring is None:
        kid, _ = _parse_header(blob)
        raise MissingKeyError(kid)
    return keyring.decrypt(blob, aad)
