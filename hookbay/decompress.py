"""``Content-Encoding`` bodies (gzip, deflate, br) decoded within the source's body limit.

The decoded size is bounded while decompressing, never after: a zip bomb stops at ``limit + 1``
decoded bytes and answers 413, so memory stays near the limit whatever the ratio. The stored raw
body keeps the bytes as received; ingest and the worker decode them with the same function.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from hookbay.errors import BadRequest, HookbayError, PayloadTooLarge

try:  # optional: brotli is a well-kept C library, but not every install has it
    import brotli
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

CHUNK = 64 * 1024
STORED_LIMIT = 64 * 1024 * 1024  # the largest body limit a source may have: bodies already stored decode within it


class BadEncoding(BadRequest):
    code = "bad_encoding"
    message = "The body does not decode with its Content-Encoding"


class UnsupportedEncoding(HookbayError):
    status = 415
    code = "unsupported_encoding"
    message = "Unsupported Content-Encoding"


def supported() -> tuple[str, ...]:
    return ("gzip", "deflate", "br") if brotli is not None else ("gzip", "deflate")


def normalise(header: bytes | str | None) -> str | None:
    """The coding named by a ``Content-Encoding`` header, lower-case; ``None`` for none/identity.
    Stacked codings (``gzip, br``) are refused: no sender needs them and each layer multiplies."""
    if header is None:
        return None
    text = (header.decode("latin-1") if isinstance(header, bytes) else header).strip().lower()
    if text in ("", "identity"):
        return None
    if text == "x-gzip":
        return "gzip"
    if text not in supported():
        raise UnsupportedEncoding(detail={"encoding": text[:40], "supported": list(supported())})
    return text


def _zlib_stream(body: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out: list[bytes] = []
    size = 0
    data = body
    while True:
        # max_length bounds what one call may produce; the rest of the input waits in unconsumed_tail
        chunk = d.decompress(data, min(CHUNK, limit + 1 - size))
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(detail={"limit_bytes": limit, "decoded": True})
        out.append(chunk)
        if d.eof:
            break
        data = d.unconsumed_tail
        if not data and not chunk:
            raise zlib.error("truncated stream")
    return b"".join(out)


def _deflate(body: bytes, limit: int) -> bytes:
    """RFC 9110's deflate is the zlib format; some senders send raw deflate anyway."""
    try:
        return _zlib_stream(body, zlib.MAX_WBITS, limit)
    except zlib.error:
        return _zlib_stream(body, -zlib.MAX_WBITS, limit)


def _brotli(body: bytes, limit: int) -> bytes:
    assert brotli is not None
    d = brotli.Decompressor()
    out: list[bytes] = []
    size = 0
    data = body
    while True:
        # output_buffer_limit (brotli >= 1.2) bounds one call's output; the decoder keeps the rest of the input
        chunk = d.process(data, output_buffer_limit=limit + 1 - size)
        data = b""
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(detail={"limit_bytes": limit, "decoded": True})
        out.append(chunk)
        if d.is_finished():
            return b"".join(out)
        if d.can_accept_more_data() and not chunk:
            raise brotli.error("truncated stream")


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": lambda body, limit: _zlib_stream(body, 16 + zlib.MAX_WBITS, limit),
    "deflate": _deflate,
    "br": _brotli,
}


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """The decoded body; 413 once it passes ``limit``, 400 when the stream is corrupt."""
    try:
        return _DECODERS[encoding](body, limit)
    except HookbayError:
        raise
    except Exception:
        raise BadEncoding(f"The body is not valid {encoding} data", detail={"encoding": encoding}) from None
