"""The exception tree: each class carries its HTTP status and error code, rendered in one JSON shape.

Every error of every endpoint looks like ``{"error": {"code": ..., "message": ..., "detail": ...}}``.
"""

from __future__ import annotations

from typing import Any

import orjson


class HookbayError(Exception):
    status = 500
    code = "internal_error"
    message = "Internal server error"

    def __init__(self, message: str | None = None, *, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.detail = detail
        self.headers = headers or {}

    rule: str | None = None

    def with_rule(self, rule: str) -> HookbayError:
        """Name the ingest check that rejected the request, for the request log."""
        self.rule = rule
        return self

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.detail)


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        err["detail"] = detail
    return {"error": err}


def error_bytes(code: str, message: str, detail: Any = None) -> bytes:
    return orjson.dumps(error_body(code, message, detail))


class BadRequest(HookbayError):
    status = 400
    code = "bad_request"
    message = "Bad request"


class AmbiguousSource(BadRequest):
    """A source name shared by several clients names no one source: the caller must say which."""

    code = "ambiguous"
    message = "The source name is ambiguous: use the id or the client"


class MalformedBody(BadRequest):
    code = "malformed_body"
    message = "The body is not well-formed"


class Unauthorized(HookbayError):
    status = 401
    code = "unauthorized"
    message = "Missing or invalid credentials"


class Forbidden(HookbayError):
    status = 403
    code = "forbidden"
    message = "Forbidden"


class NotFound(HookbayError):
    status = 404
    code = "not_found"
    message = "Not Found"


class MethodNotAllowed(HookbayError):
    status = 405
    code = "method_not_allowed"
    message = "Method not allowed"


class Conflict(HookbayError):
    status = 409
    code = "conflict"
    message = "Conflict"


class PayloadTooLarge(HookbayError):
    status = 413
    code = "payload_too_large"
    message = "The body exceeds the size limit"


class UnsupportedMediaType(HookbayError):
    status = 415
    code = "unsupported_media_type"
    message = "Unsupported content type"


class Unprocessable(HookbayError):
    status = 422
    code = "unprocessable"
    message = "The request could not be processed"


class ParseBudgetExceeded(Unprocessable):
    code = "parse_budget_exceeded"
    message = "Parsing this body took more CPU time than allowed (HOOKBAY_PARSE_BUDGET_MS)"


class RateLimited(HookbayError):
    status = 429
    code = "rate_limited"
    message = "Too many requests"


class StorageUnavailable(HookbayError):
    status = 503
    code = "storage_unavailable"
    message = "Storage is unavailable; the request was not stored, retry later"


class WriteTimeout(StorageUnavailable):
    """The commit did not finish in time but may still finish: the sender must not assume either way."""

    message = "Storage is slow; the request may have been stored, retry with the same Idempotency-Key"


class SettingsError(HookbayError):
    code = "invalid_settings"
    message = "A HOOKBAY_* setting is invalid"


class EncryptionKeyMissing(HookbayError):
    status = 500
    code = "encryption_key_missing"
    message = "This data is encrypted with a key that is not configured (HOOKBAY_ENCRYPTION_KEY)"
