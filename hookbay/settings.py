"""One settings object for every process, read from ``HOOKBAY_*`` environment variables."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOOKBAY_", extra="ignore")

    data_dir: Path = Field(default=Path.home() / ".hookbay", description="Directory for the SQLite database")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite in data_dir")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = Field(default="", description="Base URL printed for ingest links")
    tls_cert: str = Field(default="", description="PEM certificate (chain) file: serve HTTPS directly (with tls_key)")
    tls_key: str = Field(default="", description="PEM private key file for tls_cert")
    processes: int = Field(default=1, ge=1, le=256, description=(
        "Ingest/API processes `serve` runs on one port (PostgreSQL only above 1); the worker runs in one more"))
    admin_token: str = Field(default="", description="Admin bearer token; generated on first start if empty")
    max_body_bytes: int = 1024 * 1024
    max_body_bytes_limit: int = Field(default=10 * 1024 * 1024, ge=1, description=(
        "Largest max_body_bytes a client token may give a source (admins may go higher, up to 64 MiB): "
        "a body is held in memory, stored and parsed whole"))
    secret_env_prefix: str = Field(default="HOOKBAY_PROVIDER_", pattern=r"^[A-Z][A-Z0-9_]*_$", description=(
        "Only environment variables whose names start with this (or HOOKBAY_MAILCHIMP_API_KEY) may be named "
        "as provider keys by actions (api_key_env)"))
    batch_max: int = Field(default=512, description="Most requests committed in one group commit")
    write_timeout: float = Field(default=10.0, description="Seconds an ingest waits for its commit before 503")
    busy_timeout_ms: int = Field(default=5000, description="SQLite busy timeout / PostgreSQL lock timeout")
    retry_after: int = Field(default=5, description="Retry-After seconds sent with 503")
    job_lease_seconds: float = 30.0
    job_max_attempts: int = 5
    worker_batch: int = 100
    worker_batch_busy: int = Field(default=25, ge=1, description="Jobs the in-process worker claims at once while it is behind and ingest is saturated (shorter parse stretches and store transactions for acks to wait behind)")
    worker_yield_ratio: float = Field(default=8.0, description="When ingest is saturated and the in-process worker is behind (full batches), it idles as long as its batch took, and this many times as long after 10 full batches in a row; 0 = never")
    worker_backoff_inflight: int = Field(default=32, description="Ingest requests in flight at once (peak since the worker's last batch) that count as saturated")
    worker_poll_seconds: float = 1.0
    worker_heartbeat_seconds: float = Field(default=1.0, gt=0, description="How often a running worker says it is alive")
    worker_stale_seconds: float = Field(default=5.0, gt=0, description="A worker silent this long is taken for dead: its jobs are claimed again at once (a worker that never sent a heartbeat loses them when their lease runs out)")
    run_worker: Literal["process", "inline", "off"] = Field(
        default="process",
        description="How `serve` runs the worker and deliveries: process (a supervised child process), inline "
                    "(in the server's own event loop, for tiny installs) or off; true/false mean process/off")
    worker_stop_timeout: float = Field(default=10.0, ge=0, description="Seconds the worker process gets to finish its batch on shutdown before it is killed")
    parse_budget_ms: int = Field(default=2000, ge=1, description="CPU milliseconds a /V1/Test or ?wait=1 parse may take before it answers 422 parse_budget_exceeded")
    parse_workers: int = Field(default=2, ge=1, description="Processes that parse /V1/Test and ?wait=1 bodies off the event loop (started on first use)")
    source_refresh_seconds: float = Field(default=0.5, description="PostgreSQL: fallback poll for source changes (NOTIFY is the fast path)")
    source_check_seconds: float = Field(default=0.05, gt=0, description="Longest a source change by another process takes to reach a running server (SQLite poll of PRAGMA data_version; least gap between checks for unknown tokens); the CLI waits twice this after a change")
    gil_switch_interval: float = 0.001
    retention_interval_seconds: float = Field(default=3600, description="How often serve purges expired raw bodies")
    partition_interval: Literal["day", "week", "month"] = Field(default="day", description="PostgreSQL: the span of one request-log partition (UTC days, weeks from Monday, calendar months)")
    partition_ahead: int = Field(default=7, ge=1, le=400, description="PostgreSQL: request-log partitions kept ready past the current one")
    partition_check_seconds: float = Field(default=3600, gt=0, description="PostgreSQL: how often serve and worker create the partitions ahead")
    relay_acked_retention_seconds: float = Field(
        default=86400, ge=0, description="Acked relay messages are deleted this long after their ack (their requests stay)")
    header_timeout: float = Field(default=10.0, gt=0, description="Seconds from a connection's opening (or the end of its previous response) until the request's full header block must have arrived; else 408 and close")
    body_idle_timeout: float = Field(default=10.0, gt=0, description="Seconds a request body may go without a byte before the connection is closed")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="Most bytes in a request line plus headers; more answers 431")
    max_headers: int = Field(default=100, ge=1, description="Most header lines in a request; more answers 431")
    max_connections: int = Field(default=10000, ge=2, description="Most open client connections (never above 80% of the open-files limit); over it a new connection gets 503 and is closed")
    max_connections_per_client: int = Field(default=256, ge=1, description="Most open connections from one client address (trusted proxies exempt); over it 503 and close")
    admin_reserved_connections: int = Field(default=32, ge=0, description="The last this-many connections under HOOKBAY_MAX_CONNECTIONS serve only the admin API, console and health checks, not ingest")
    admin_max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1, description="Largest admin API request body; more answers 413")
    trusted_proxies: str = Field(default="", description="Comma-separated CIDRs whose X-Forwarded-For/Forwarded is believed")
    encryption_key: str = Field(default="", description="kid:base64key[,kid:key...]; the first encrypts")
    sensitive_headers: str = Field(default="authorization,cookie,proxy-authorization",
                                   description="Header values encrypted at rest when a key is set")
    smtp_host: str = Field(default="", description="SMTP server for email actions; empty disables them")
    smtp_port: int = 25
    smtp_security: str = Field(default="none", description="none, starttls or tls")
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = Field(default="hookbay@localhost", description="Envelope and From address")
    smtp_timeout: float = 10.0
    mailchimp_base_url: str = Field(default="", description="Mailchimp API base URL; empty = from the key's datacenter")
    acoustic_base_url: str = Field(default="", description=(
        "Acoustic Campaign API base URL for every connection; empty = from the connection's pod"))
    delivery_schedule: str = Field(default="5,30,120,600,1800,3600,10800,21600,43200,86400",
                                   description="Seconds before each delivery retry (full jitter), then dead letter")
    delivery_concurrency: int = Field(default=32, ge=1, description="Deliveries in flight per worker process")
    delivery_per_destination: int = Field(default=4, ge=1, description="Deliveries in flight per destination host")
    delivery_lease_seconds: float = Field(default=120.0, description="A delivery whose worker died is retried after this")
    ready_max_lag_seconds: float = Field(
        default=300, ge=0, description="/readyz answers 503 while the oldest due job has waited longer; 0 = never")
    alert_interval_seconds: float = Field(
        default=30, gt=0, description="How often the worker evaluates alert rules (and repeats/resolves alerts)")
    metrics_token: str = Field(default="", description="Bearer token /metrics requires; empty leaves /metrics open")
    public_docs: bool = Field(
        default=True, description="Serve /api/v1/docs and the OpenAPI JSON to anyone; false = signed-in users only")
    debug: bool = Field(default=False, description="CLI: show the traceback of an unexpected error (as --debug)")
    log_level: str = "info"
    log_json: bool = True

    @field_validator("secret_env_prefix")
    @classmethod
    def _prefix_excludes_settings(cls, v: str) -> str:
        """A prefix such as ``HOOKBAY_`` would let an action name the admin token or the database URL."""
        clash = sorted(n for n in ("HOOKBAY_" + f.upper() for f in cls.model_fields) if n.startswith(v))
        if clash:
            raise ValueError(f"the prefix {v!r} would expose server settings such as {clash[0]}")
        return v

    @field_validator("run_worker", mode="before")
    @classmethod
    def _worker_mode(cls, v: object) -> object:
        """Earlier versions took a boolean: true ran the worker (now in its own process), false none."""
        if isinstance(v, bool):
            return "process" if v else "off"
        if isinstance(v, str):
            low = v.strip().lower()
            return {"true": "process", "1": "process", "yes": "process", "on": "process",
                    "false": "off", "0": "off", "no": "off", "none": "off"}.get(low, low)
        return v

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'hookbay.db').resolve()}"

    @property
    def delivery_schedule_list(self) -> tuple[float, ...]:
        return tuple(float(x) for x in self.delivery_schedule.split(",") if x.strip())

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


PUBLIC_URL_META = "public_url"  # meta key: the base URL the last started server answers on (CLI ingest links)

# HOOKBAY_* names that are not server settings: read by the relay agent, the test suite and the
# benchmarks. Listed so that a warning about an unknown name is never noise.
NON_SETTING_NAMES = frozenset({"HOOKBAY_RELAY_TOKEN", "HOOKBAY_MAILCHIMP_API_KEY", "HOOKBAY_DURABLE_MIN_DB"})
NON_SETTING_PREFIXES = ("HOOKBAY_AGENT_", "HOOKBAY_TEST_", "HOOKBAY_STATEFUL_")


def unknown_settings(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Each ``HOOKBAY_*`` variable that no setting reads, with the closest known name: a misspelt
    variable is otherwise ignored without a word, and the server runs with the default."""
    known = {"HOOKBAY_" + f.upper() for f in Settings.model_fields}
    provider = environ.get("HOOKBAY_SECRET_ENV_PREFIX") or str(Settings.model_fields["secret_env_prefix"].default)
    out: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        up = name.upper()
        if (not up.startswith("HOOKBAY_") or up in known or up in NON_SETTING_NAMES
                or up.startswith(NON_SETTING_PREFIXES) or up.startswith(provider.upper())):
            continue
        # compare what follows the shared prefix, else every name looks alike
        tails = {n.removeprefix("HOOKBAY_"): n for n in known | NON_SETTING_NAMES}
        close = difflib.get_close_matches(up.removeprefix("HOOKBAY_"), sorted(tails), n=1, cutoff=0.6)
        out.append((name, tails[close[0]] if close else None))
    return out
