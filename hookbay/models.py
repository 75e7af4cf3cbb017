"""Pydantic models for source configuration and the admin API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Format = Literal["auto", "json", "ndjson", "xml", "csv", "form"]
Parser = Literal["generic", "contact", "mapping"]
Method = Literal["POST", "PUT", "PATCH", "GET"]


class SignatureConfig(BaseModel):
    """How requests are signed. The secrets themselves are stored apart (encrypted when a key is
    configured) and never returned after they are set."""

    model_config = ConfigDict(extra="forbid")

    scheme: Literal["standard", "github", "stripe", "shopify", "woocommerce", "slack", "hmac"]
    header: str | None = Field(default=None, description="hmac: the header carrying the signature")
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="hmac: text before the digest, e.g. 'sha256='")
    tolerance_s: int = Field(default=300, ge=1, le=86400, description="Timestamp tolerance for schemes that sign one")

    @model_validator(mode="after")
    def _valid_spec(self) -> SignatureConfig:
        from hookbay.signatures import SignatureSpec

        SignatureSpec(scheme=self.scheme, header=self.header, algorithm=self.algorithm, encoding=self.encoding,
                      prefix=self.prefix, tolerance_s=self.tolerance_s)
        return self


class _ActionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=100, description="Shown in deliveries; default '<type>-<n>'")
    when: str | None = Field(default=None, description=(
        "Condition over the record, e.g. 'EmailPermission == true and ProviderType == 3'; absent = always"))
    on: Literal["contact", "record", "order"] | None = Field(default=None, description=(
        "Which records the action runs on: contact, record (free records) or order; absent = contacts "
        "and records, not orders"))
    retry_schedule: list[float] | None = Field(default=None, min_length=1, max_length=50, description=(
        "Seconds before each retry (full jitter); default HOOKBAY_DELIVERY_SCHEDULE, about a day in total"))

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 reads an unquoted ``on:`` key as the boolean true; take it as the ``on`` it was."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("when")
    @classmethod
    def _condition(cls, v: str | None) -> str | None:
        if v is not None:
            from hookbay.actions.conditions import ConditionError, compile_condition

            try:
                compile_condition(v)
            except ConditionError as e:
                raise ValueError(f"invalid condition: {e}") from None
        return v

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            from hookbay.actions.retry import RetryPolicy

            RetryPolicy(schedule=tuple(v))
        return v


class EmailAction(_ActionBase):
    """Render Jinja2 templates with the record and profile and send over SMTP (HOOKBAY_SMTP_*)."""

    type: Literal["email"]
    to: str = Field(default="{{ contact.email }}", description="Recipient template")
    subject: str
    text: str
    html: str | None = None
    marketing: bool | None = Field(default=None, description=(
        "Marketing mail is not sent when the profile's current email consent is opt-out at send time; "
        "default true, but false for `on: order` (a receipt is transactional mail)"))

    @property
    def is_marketing(self) -> bool:
        return self.marketing if self.marketing is not None else self.on != "order"

    @model_validator(mode="after")
    def _templates_compile(self) -> EmailAction:
        from hookbay.actions.email import TemplateError, check_templates

        try:
            check_templates({"to": self.to, "subject": self.subject, "text": self.text, "html": self.html})
        except TemplateError as e:
            raise ValueError(str(e)) from None
        return self


class MailchimpAction(_ActionBase):
    """Upsert the contact into Mailchimp audiences (PUT member by MD5 of the lower-cased email)."""

    type: Literal["mailchimp"]
    list_ids: list[str] = Field(default_factory=list, description="Audience ids; empty = the record's ListIds")
    api_key_env: str = Field(default="HOOKBAY_MAILCHIMP_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$",
                             description=(
                                 "Admin only: environment variable on the server holding the API key; "
                                 "HOOKBAY_MAILCHIMP_API_KEY or a name under HOOKBAY_SECRET_ENV_PREFIX"))
    base_url: str | None = Field(default=None, description=(
        "Admin only: API base URL; default HOOKBAY_MAILCHIMP_BASE_URL, else from the key's datacenter"))


def _whsec() -> str:
    from hookbay.signatures import generate_secret

    return generate_secret("standard")


class ForwardAction(_ActionBase):
    """POST the record (or the raw body) to a URL, signed with Standard Webhooks headers."""

    type: Literal["forward"]
    url: str = Field(pattern=r"^https?://", max_length=2000)
    body: Literal["record", "raw"] = "record"
    secret: str = Field(default_factory=_whsec, pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$",
                        description="whsec_ signing secret; generated when omitted")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers; Host is admin only")
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        from hookbay.signatures import validate_secret

        validate_secret("standard", v)
        return v


Action = Annotated[EmailAction | MailchimpAction | ForwardAction, Field(discriminator="type")]


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
            from hookbay.parsers.mapping import Mapping, MappingError

            try:
                Mapping.from_dict(self.mapping)
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
