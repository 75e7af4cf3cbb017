"""What particular senders need from the ingest edge (issue #15), as pure functions and config models:
dedupe keys from headers or the body, browser origins, custom answers and verification handshakes.

Everything here is set by a tenant, so it is validated as hostile input: redirect URLs are http(s)
only, templates run in Jinja2's immutable sandbox with size limits, challenges are echoed only as
``text/plain`` with ``nosniff`` and bounded in length.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

# --- dedupe keys --------------------------------------------------------------------------------

IDEMPOTENCY_PRESETS: dict[str, str] = {
    "stripe": "body:id",  # the event id; a retry is a new delivery of the same event
    "shopify": "header:X-Shopify-Webhook-Id",
    "github": "header:X-GitHub-Delivery",
    "woocommerce": "header:X-WC-Webhook-Delivery-ID",
    "standard": "header:webhook-id",
}
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
MAX_KEY = 200
MAX_EXPRESSION = 300


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A compiled ``idempotency_key``: a header (lower-case bytes) or a JMESPath over the body."""

    header: bytes | None = None
    expression: Any = None


def resolve_idempotency_key(value: str) -> str:
    """The preset's definition, or the value itself; raises ValueError when it is neither valid form."""
    spec = IDEMPOTENCY_PRESETS.get(value, value)
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("header", "body") or not rest:
        raise ValueError(f"idempotency_key must be a preset ({', '.join(IDEMPOTENCY_PRESETS)}), "
                         "'header:NAME' or 'body:JMESPATH'")
    if kind == "header" and not HEADER_NAME.fullmatch(rest):
        raise ValueError(f"not a header name: {rest!r}")
    if kind == "body":
        if len(rest) > MAX_EXPRESSION:
            raise ValueError(f"the JMESPath expression is longer than {MAX_EXPRESSION} characters")
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            jmespath.compile(rest)
        except JMESPathError as e:
            raise ValueError(f"invalid JMESPath expression: {e}") from None
    return spec


def compile_key(value: str | None) -> KeySpec | None:
    if value is None:
        return None
    kind, _, rest = resolve_idempotency_key(value).partition(":")
    if kind == "header":
        return KeySpec(header=rest.lower().encode("latin-1"))
    import jmespath

    return KeySpec(expression=jmespath.compile(rest))


def key_text(value: Any) -> str | None:
    """A key as stored: strings as they are, other values as compact JSON; longer than the column
    holds, a SHA-256 (truncating would make two different keys equal)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if len(text) > MAX_KEY:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def body_key(doc: Any, spec: KeySpec) -> str | None:
    if doc is None or spec.expression is None:
        return None
    try:
        return key_text(spec.expression.search(doc))
    except Exception:  # a type error inside a function (join over numbers): no key, not a failure
        return None


def parse_small(body: bytes, content_type: str | None) -> Any:
    """The body as a JSON value or a form's fields (first value per name), for dedupe keys and the
    honeypot; ``None`` when it is neither. Linear: orjson, or the standard query-string parser."""
    ct = (content_type or "").split(";", 1)[0].strip().lower()
    if ct == "application/x-www-form-urlencoded":
        out: dict[str, str] = {}
        try:
            for k, v in parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10000):
                out.setdefault(k, v)
        except (UnicodeDecodeError, ValueError):
            return None
        return out
    if ct.endswith("json") or (not ct and body[:1] in (b"{", b"[")):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    return None


def honeypot_filled(doc: Any, field: str) -> bool:
    if not isinstance(doc, dict):
        return False
    v = doc.get(field)
    return v not in (None, "", [], False)


# --- browser origins ----------------------------------------------------------------------------

ORIGIN = re.compile(r"https?://[a-z0-9.-]+(?::\d{1,5})?|https?://\[[0-9a-f:.]+\](?::\d{1,5})?")
BASE_ALLOW_HEADERS = ("content-type", "x-api-key", "idempotency-key")
MAX_AGE = "600"


def normalise_origin(value: str) -> str:
    v = value.strip().lower().rstrip("/")
    if v == "*":
        return v
    if not ORIGIN.fullmatch(v):
        raise ValueError(f"not an origin (scheme://host[:port], http or https, no path): {value!r}")
    return v


def check_redirect_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("redirect_url must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError("redirect_url must not carry credentials")
    if any(c in value for c in "\r\n\t "):
        raise ValueError("redirect_url must not contain whitespace")
    return value


def redirect_to(url: str, request_id: str) -> str:
    sep = "&" if urlsplit(url).query else "?"
    base, hash_, frag = url.partition("#")
    return f"{base}{sep}request_id={request_id}{hash_}{frag}"


def prefers_html(accept: bytes | None) -> bool:
    """Whether ``Accept`` ranks text/html above JSON (a browser's form submission does; fetch sends */*)."""
    if not accept:
        return False
    best_html = best_json = 0.0
    for part in accept.decode("latin-1").split(",")[:50]:
        media, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, q)
        elif media in ("application/json", "*/*"):
            best_json = max(best_json, q if media == "application/json" else q - 0.001)
    return best_html > 0 and best_html >= best_json


# --- custom answers -----------------------------------------------------------------------------

SALESFORCE_ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    '<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)
RESPONSE_PRESETS: dict[str, tuple[int, str, str]] = {
    "salesforce-ack": (200, "text/xml; charset=utf-8", SALESFORCE_ACK),
}
MAX_TEMPLATE = 8 * 1024
MAX_RENDERED = 64 * 1024
CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+(\s*;\s*[a-z0-9_-]+=[a-z0-9_.-]+)*", re.I)


class ResponseConfig(BaseModel):
    """The answer to an accepted request, instead of hookbay's JSON."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["salesforce-ack"] | None = Field(default=None, description=(
        "salesforce-ack: the SOAP notificationsResponse with <Ack>true</Ack> (text/xml)"))
    status: int = Field(default=200, ge=200, le=299, description="2xx only: anything else makes senders retry")
    content_type: str = Field(default="application/json", max_length=100)
    body: str | None = Field(default=None, max_length=MAX_TEMPLATE, description=(
        "Jinja2 template (sandboxed); variables request_id, received_at (ISO-8601), source (id, name)"))

    @model_validator(mode="after")
    def _valid(self) -> ResponseConfig:
        if not CONTENT_TYPE.fullmatch(self.content_type):
            raise ValueError(f"not a content type: {self.content_type!r}")
        if self.preset is not None and self.body is not None:
            raise ValueError("give a preset or a body, not both")
        if self.body is not None:
            compile_template(self.body)
        return self


def _sandbox() -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(autoescape=False)


def compile_template(text: str) -> Any:
    from jinja2 import TemplateError

    try:
        return _sandbox().from_string(text)
    except TemplateError as e:
        raise ValueError(f"invalid response template: {e}") from None


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> Any:
    return compile_template(text)


@dataclass(frozen=True, slots=True)
class Answer:
    """A compiled custom response."""

    status: int
    content_type: bytes
    template: str | None = None  # the text (compiled once per process, cached): ActiveSource crosses processes
    fixed: bytes | None = None

    def render(self, request_id: str, received_at: str, source_id: str, source_name: str) -> bytes:
        if self.fixed is not None or self.template is None:
            return self.fixed or b""
        out = _compiled(self.template).render(request_id=request_id, received_at=received_at,
                                   source={"id": source_id, "name": source_name})
        data: bytes = out.encode("utf-8")
        if len(data) > MAX_RENDERED:
            raise ValueError("rendered response is too large")
        return data


def compile_answer(cfg: ResponseConfig | None) -> Answer | None:
    if cfg is None:
        return None
    if cfg.preset is not None:
        status, ctype, body = RESPONSE_PRESETS[cfg.preset]
        return Answer(status, ctype.encode(), fixed=body.encode())
    if cfg.body is None:
        return Answer(cfg.status, cfg.content_type.encode(), fixed=b"")
    compile_template(cfg.body)
    return Answer(cfg.status, cfg.content_type.encode(), template=cfg.body)


# --- verification handshakes --------------------------------------------------------------------

MAX_CHALLENGE = 2048


class HandshakeConfig(BaseModel):
    """A provider's endpoint verification, answered after the source's own checks pass."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["slack", "meta", "msgraph", "zoom", "dropbox"]
    verify_token: str | None = Field(default=None, min_length=1, max_length=200, description=(
        "meta: the Verify Token entered in the app dashboard (hub.verify_token must equal it)"))

    @model_validator(mode="after")
    def _valid(self) -> HandshakeConfig:
        if self.type == "meta" and not self.verify_token:
            raise ValueError("handshake meta needs a verify_token")
        if self.type != "meta" and self.verify_token is not None:
            raise ValueError("verify_token is for the meta handshake only")
        return self


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: bytes
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


NOSNIFF = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))


def _text(value: str) -> Reply | None:
    if not value or len(value) > MAX_CHALLENGE:
        return None
    return Reply(200, b"text/plain; charset=utf-8", value.encode("utf-8"), NOSNIFF)


def query_params(qs: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in parse_qsl(qs.decode("latin-1"), keep_blank_values=True, max_num_fields=50):
        out.setdefault(k, v)
    return out


def unsigned_shape(kind: str, method: str, params: dict[str, str], body: bytes) -> bool:
    """A verification request that its provider sends unsigned (so the source's signature check
    cannot apply to it): Meta's and Dropbox's GET, Microsoft Graph's validation POST. It gets
    nothing but its own challenge back (Meta's only with the right verify token)."""
    if kind == "meta":
        return method == "GET" and "hub.challenge" in params
    if kind == "dropbox":
        return method == "GET" and "challenge" in params
    if kind == "msgraph":
        return method == "POST" and "validationToken" in params and not body.strip()
    return False


class HandshakeRefused(Exception):
    """Meta's verify token does not match: 403."""


def reply(cfg: HandshakeConfig, method: str, params: dict[str, str], doc: Any,
          secrets: list[str]) -> Reply | None:
    """The provider's expected answer when this request is its verification, else ``None``."""
    kind = cfg.type
    if kind == "meta":
        if method != "GET" or "hub.challenge" not in params:
            return None
        token = params.get("hub.verify_token", "")
        if params.get("hub.mode") != "subscribe" or not hmac.compare_digest(
                token.encode(), (cfg.verify_token or "").encode()):
            raise HandshakeRefused()
        return _text(params["hub.challenge"])
    if kind == "dropbox":
        return _text(params["challenge"]) if method == "GET" and "challenge" in params else None
    if kind == "msgraph":
        return _text(params["validationToken"]) if "validationToken" in params else None
    if not isinstance(doc, dict):
        return None
    if kind == "slack":
        if doc.get("type") == "url_verification" and isinstance(doc.get("challenge"), str):
            return _text(doc["challenge"])
        return None
    # zoom
    payload = doc.get("payload")
    if doc.get("event") != "endpoint.url_validation" or not isinstance(payload, dict):
        return None
    plain = payload.get("plainToken")
    if not isinstance(plain, str) or not plain or len(plain) > MAX_CHALLENGE or not secrets:
        return None
    encrypted = hmac.new(secrets[0].encode(), plain.encode(), hashlib.sha256).hexdigest()
    return Reply(200, b"application/json", orjson.dumps({"plainToken": plain, "encryptedToken": encrypted}))
