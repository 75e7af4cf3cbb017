"""Pydantic models for source configuration and the admin API."""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hookbay.actions.base import ActionConfig
from hookbay.actions.registry import ACTIONS
from hookbay.senders import HandshakeConfig, ResponseConfig
from hookbay.signatures import SignatureSpec
from hookbay.signatures.registry import SCHEMES

Format = Literal["auto", "json", "ndjson", "xml", "csv", "form"]
Parser = Literal["generic", "contact", "mapping"]
Method = Literal["POST", "PUT", "PATCH", "GET"]
if TYPE_CHECKING:
    SchemeName = str
else:
    SchemeName = Literal[tuple(SCHEMES)]  # the registered signature schemes, in registry order


class SignatureConfig(BaseModel):
    """How requests are signed. The secrets themselves are stored apart (encrypted when a key is
    configured) and never returned after they are set."""

    model_config = ConfigDict(extra="forbid")

    scheme: SchemeName
    header: str | None = Field(default=None, description="hmac: the header carrying the signature")
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="hmac: text before the digest, e.g. 'sha256='")
    tolerance_s: int = Field(default=300, ge=1, le=86400, description="Timestamp tolerance for schemes that sign one")

    @model_validator(mode="after")
    def _valid_spec(self) -> SignatureConfig:
        SignatureSpec(scheme=self.scheme, header=self.header, algorithm=self.algorithm, encoding=self.encoding,
                      prefix=self.prefix, tolerance_s=self.tolerance_s)
        return self


if TYPE_CHECKING:
    Action = ActionConfig
else:  # the registered action types, told apart by their "type"
    Action = Annotated[functools.reduce(operator.or_, ACTIONS.values()), Field(discriminator="type")]


class SourceConfig(BaseModel):
    """What a source accepts and how its bodies are parsed; stored as JSON in ``sources.config``."""

    model_config = ConfigDict(extra="forbid")

    format: Format = "auto"
    parser: Parser = "generic"
    methods: list[Method] = Field(default_factory=lambda: list[Method](["POST"]))
    max_body_bytes: int | None = Field(default=None, ge=1, le=64 * 1024 * 1024, description=(
        "Body size limit; a client token may set at most HOOKBAY_MAX_BODY_BYTES_LIMIT"))
    idempotency_header: str | None = Field(default=None, description="Extra header naming the delivery id")
    mapping: dict[str, Any] | None = Field(default=None, description="Declarative mapping (parser: mapping)")
    default_region: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="Region for phone numbers without +country code"
    )
    sync: bool = Field(default=False, description="Parse before answering, as if every request had ?wait=1")
    allow_ips: list[str] = Field(default_factory=list, description="CIDR allowlist (IPv4/IPv6); empty allows all")
    required_headers: dict[str, str] = Field(default_factory=dict, description="Header name -> exact value")
    rate: float | None = Field(default=None, gt=0, description="Token bucket refill, requests per second")
    burst: int | None = Field(default=None, ge=1, description="Token bucket size (default: max(1, rate))")
    signature: SignatureConfig | None = None
    actions: list[Action] = Field(default_factory=list, max_length=20, description="Run in order for each record")
    allow_private_destinations: bool = Field(default=False, description=(
        "Admin only: let forward/provider actions reach loopback and private addresses (refused by default: SSRF)"))
    relay: bool = Field(default=False, description=(
        "Indirect mode: keep every accepted request in a durable queue for `hookbay agent` to pull"))
    retention_days: int | None = Field(default=None, ge=1, le=3650,
                                       description="Purge raw bodies this many days after receipt (records and profiles stay)")
    # --- the ingest edge (issue #15; docs/ingest-edge.md) ---
    idempotency_key: str | None = Field(default=None, max_length=400, description=(
        "What identifies an event for dedupe: a preset (stripe, shopify, github, woocommerce, standard), "
        "'header:NAME' or 'body:JMESPATH'; unique per source"))
    idempotency_days: int = Field(default=30, ge=1, le=3650, description=(
        "How long a dedupe key is remembered (retention clears older ones)"))
    allowed_origins: list[str] = Field(default_factory=list, max_length=50, description=(
        "Browser origins allowed to post (CORS); '*' allows any site (shown as a warning); empty = no CORS"))
    redirect_url: str | None = Field(default=None, max_length=2000, description=(
        "http(s) URL an HTML form is sent to (303) after the commit, with ?request_id="))
    rate_per_ip: float | None = Field(default=None, gt=0, le=10000, description=(
        "Token bucket refill per client address (IPv6 per /64), requests per second"))
    burst_per_ip: int | None = Field(default=None, ge=1, le=100000, description=(
        "Token bucket size per client address (default: max(1, rate_per_ip))"))
    honeypot_field: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\[\]-]+$",
                                       description="A form field humans leave empty: filled = stored as spam, never processed")
    response: ResponseConfig | None = Field(default=None, description="The answer to accepted requests")
    handshake: HandshakeConfig | None = Field(default=None, description="Provider endpoint verification")

    @field_validator("idempotency_key")
    @classmethod
    def _idem_key(cls, v: str | None) -> str | None:
        if v is not None:
            from hookbay.senders import resolve_idempotency_key

            resolve_idempotency_key(v)
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        from hookbay.senders import normalise_origin

        return list(dict.fromkeys(normalise_origin(o) for o in v))

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, v: str | None) -> str | None:
        from hookbay.senders import check_redirect_url

        return check_redirect_url(v) if v is not None else None

    @field_validator("allow_ips")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for item in v:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"not an IP address or CIDR: {item!r}") from None
        return out

    @field_validator("required_headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for name, value in v.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"not a header name: {name!r}")
            if not re.fullmatch(r"[\x20-\x7e]*", value):
                raise ValueError(f"header {name!r}: the value must be printable ASCII")
        return {k.lower(): val for k, val in v.items()}

    @model_validator(mode="after")
    def _mapping_fits_parser(self) -> SourceConfig:
        if self.parser == "mapping":
            if self.mapping is None:
                raise ValueError("parser 'mapping' needs a mapping document")
            from hookbay.parsers import compile
            from hookbay.parsers.mapping import MappingError

            try:
                compile.from_dict(self.mapping)
            except MappingError as e:
                raise ValueError(f"invalid mapping: {e}") from None
        return self

    @field_validator("methods")
    @classmethod
    def _dedupe(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for m in v:
            m = m.upper()
            if m not in out:
                out.append(m)
        if not out:
            raise ValueError("at least one method")
        return out


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    client_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    enabled: bool = True
    api_key: bool = Field(default=False, description="Generate an API key (returned once)")
    config: SourceConfig = Field(default_factory=SourceConfig)
    secret: str | None = Field(default=None, min_length=8, max_length=512, description=(
        "Signing secret from the provider (write-only). With a signature scheme and no secret, one is "
        "generated and returned once."))


class SourceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    config: SourceConfig | None = None
    rotate_api_key: bool = False
    remove_api_key: bool = False


class SourceReplace(BaseModel):
    """``PUT /api/v1/sources/{id}``: the whole definition; what is absent takes its default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    config: SourceConfig = Field(default_factory=SourceConfig)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(default=None, min_length=8, max_length=512,
                               description="The new signing secret; generated (and returned once) if absent")
    grace_seconds: int = Field(default=86400, ge=0, le=30 * 86400,
                               description="How long the previous secrets stay valid")


class SourceOut(BaseModel):
    id: str
    client_id: str
    name: str
    token: str
    ingest_url: str
    enabled: bool
    api_key_required: bool
    config: SourceConfig
    created_at: str
    updated_at: str
    api_key: str | None = Field(default=None, description="Present only in the answer that created it")
    signing_secrets: int = Field(default=0, description="How many signing secrets are active (values never shown)")
    secret: str | None = Field(default=None, description="A generated signing secret, only in the answer that made it")


class RequestSummary(BaseModel):
    id: str
    source_id: str | None
    client_id: str | None
    received_at: str
    method: str
    path: str
    peer: str | None
    content_type: str | None
    body_size: int
    verdict: str
    rule: str | None
    status: int
    state: str
    duplicate_of: str | None
    content_encoding: str | None = Field(default=None, description="The body is stored as received, still encoded")


class RequestDetail(RequestSummary):
    query: str
    headers: list[list[str]]
    body: str | None = Field(description="The body as UTF-8 text when it decodes, else null")
    body_base64: str | None = Field(description="The exact body bytes, base64")
    receipt: dict[str, Any] | None
    records: list[dict[str, Any]]


class RequestPage(BaseModel):
    items: list[RequestSummary]
    next_cursor: str | None
