"""The one schema (SQLAlchemy Core) for SQLite and PostgreSQL; Alembic migrations must produce exactly this.

Times are integer microseconds since the epoch so both dialects compare and index them the same way.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # rowid alias on SQLite
Json = sa.Text  # JSON documents are stored as text written by orjson: identical bytes on both dialects

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token", sa.String(64), nullable=False, unique=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("config", Json, nullable=False, server_default="{}"),
    sa.Column("api_key_hash", sa.String(128), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("client_id", "name"),
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("source_id", sa.String(40), nullable=True),
    sa.Column("client_id", sa.String(100), nullable=True),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("query", sa.Text, nullable=False, server_default=""),
    sa.Column("headers", Json, nullable=False),
    sa.Column("peer", sa.String(64), nullable=True),
    sa.Column("content_type", sa.String(200), nullable=True),
    sa.Column("content_encoding", sa.String(16), nullable=True),  # the body is stored as received, still encoded
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("body_size", sa.Integer, nullable=False, server_default="0"),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("rule", sa.String(40), nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("duplicate_of", sa.String(40), nullable=True),
    sa.Column("receipt", Json, nullable=True),
    sa.Column("processed_at", sa.BigInteger, nullable=True),
    sa.Column("key_id", sa.String(16), nullable=True),
    sa.Index("ix_requests_source_received", "source_id", "received_at"),
    sa.Index("ix_requests_received_at", "received_at"),
    sa.Index("ix_requests_state", "state"),
    sa.Index("ix_requests_source_id_id", "source_id", "id"),
    sa.Index("ix_requests_client_id_id", "client_id", "id"),
    sa.Index(
        "uq_requests_idempotency",
        "source_id",
        "idempotency_key",
        unique=True,
    ),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("request_id", sa.String(40), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_after", sa.BigInteger, nullable=False),
    sa.Column("locked_until", sa.BigInteger, nullable=True),
    sa.Column("locked_by", sa.String(80), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_jobs_claim", "state", "run_after"),
)

# Live workers: a worker whose heartbeat stopped (its process was killed) loses its jobs' leases at
# once, instead of after the lease runs out.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("source_id", sa.String(40), nullable=False),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("parser", sa.String(32), nullable=False),
    sa.Column("parser_version", sa.String(16), nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("profile_id", sa.String(40), nullable=True, index=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("request_id", "idx"),
    sa.Index("ix_records_source_created", "source_id", "created_at"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("client_id", sa.String(100), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

rate_buckets = sa.Table(
    # PostgreSQL only: the token bucket each source's rate limit shares across processes and
    # machines (ingest/ratelimit.py leases tokens from it in chunks).
    "rate_buckets",
    metadata,
    sa.Column("source_id", sa.String(64), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),  # the database's clock, epoch seconds
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("fields", Json, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_profiles_client_email", "client_id", "email"),
    sa.Index("ix_profiles_client_phone", "client_id", "phone"),
)

# Identity keys (normalised email, E.164 phone) -> profile; the unique key is what makes two workers
# racing to create the same customer end up with one profile.
profile_keys = sa.Table(
    "profile_keys",
    metadata,
    sa.Column("client_id", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("value", sa.String(320), primary_key=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
)

consent_events = sa.Table(
    "consent_events",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("granted", sa.Boolean, nullable=False),
    sa.Column("occurred_at", sa.BigInteger, nullable=False),
    sa.Column("source_id", sa.String(40), nullable=True),
    sa.Column("request_id", sa.String(40), nullable=True),
    sa.Column("field", sa.String(40), nullable=True),
    sa.UniqueConstraint("request_id", "profile_id", "channel"),
    sa.Index("ix_consent_events_profile", "profile_id", "channel", "occurred_at"),
)

# A contact whose keys matched two profiles merged them into the older one; the merged-away id
# stays resolvable (to its survivor) through this table.
profile_merges = sa.Table(
    "profile_merges",
    metadata,
    sa.Column("merged_id", sa.String(40), primary_key=True),
    sa.Column("survivor_id", sa.String(40), nullable=False, index=True),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("request_id", sa.String(40), nullable=True),
    sa.Column("merged_at", sa.BigInteger, nullable=False),
)

erasures = sa.Table(
    "erasures",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("erased_at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("summary", Json, nullable=False),
)

# Signing secrets: the plaintext is needed to verify HMACs, so it is sealed with the encryption key
# when one is configured. Two or more rows are active during a rotation's grace period.
source_secrets = sa.Table(
    "source_secrets",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("source_id", sa.String(40), nullable=False, index=True),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("key_id", sa.String(16), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
)

# One row per action run for one record: created with the records (same transaction, unique per
# request/record/action so a re-claimed job cannot double them), claimed with a lease like jobs.
# States: pending, running, succeeded, failed (permanent error), dead (retries exhausted), skipped.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("record_idx", sa.Integer, nullable=False),
    sa.Column("action_idx", sa.Integer, nullable=False),
    sa.Column("source_id", sa.String(40), nullable=False),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("action_type", sa.String(16), nullable=False),
    sa.Column("action_name", sa.String(100), nullable=False),
    sa.Column("destination", sa.String(300), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_after", sa.BigInteger, nullable=False),
    sa.Column("locked_until", sa.BigInteger, nullable=True),
    sa.Column("locked_by", sa.String(80), nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("once_key", sa.String(300), nullable=True),
    sa.UniqueConstraint("request_id", "record_idx", "action_idx"),
    sa.Index("uq_deliveries_once", "source_id", "once_key", unique=True),
    sa.Index("ix_deliveries_claim", "state", "run_after"),
    sa.Index("ix_deliveries_source_created", "source_id", "created_at"),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("delivery_id", sa.String(40), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("latency_us", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("response_excerpt", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_delivery_attempts_delivery", "delivery_id", "attempt"),
)

# Relay (indirect mode): requests to a relay source wait here, in arrival order (the identity id is
# assigned in the ingest group commit), until an agent pulls, leases and acks them.
relay_messages = sa.Table(
    "relay_messages",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("source_id", sa.String(40), nullable=False),
    sa.Column("request_id", sa.String(40), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False, server_default="ready"),
    sa.Column("available_at", sa.BigInteger, nullable=False),
    sa.Column("lease_id", sa.String(40), nullable=True),
    sa.Column("locked_until", sa.BigInteger, nullable=True),
    sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("acked_at", sa.BigInteger, nullable=True),
    sa.Index("ix_relay_messages_queue", "source_id", "state", "id"),
)

# Relay tokens are kept apart from API tokens so one can never be mistaken for the other.
relay_tokens = sa.Table(
    "relay_tokens",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("source_id", sa.String(40), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # When an agent last pulled with this token (written at most every PULL_RECORD_EVERY_S): the
    # "relay agent silent" alert reads it.
    sa.Column("last_pull_at", sa.BigInteger, nullable=True),
)

# Alert rules: a condition, its parameters and channels as one JSON definition (validated by
# hookbay.ops.alerts.RuleDefinition); client_id NULL = a global rule, which only the admin sees.
alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=True, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("definition", Json, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Alerts: one row per opening of a rule on one subject (a source, or "system"); at most one is open
# per (rule, subject), which the single evaluator (a lease in ``meta``) guarantees.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("rule_id", sa.String(40), nullable=False),
    sa.Column("client_id", sa.String(100), nullable=True),
    sa.Column("subject", sa.String(100), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("detail", Json, nullable=False, server_default="{}"),
    sa.Column("opened_at", sa.BigInteger, nullable=False),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Column("notified_at", sa.BigInteger, nullable=False),
    sa.Column("notifications", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_alerts_rule_state", "rule_id", "state"),
    sa.Index("ix_alerts_client_opened", "client_id", "opened_at"),
)

# Who changed which source, secret, key or token, and from where; written in the change's own
# transaction. ``changes`` and ``weakens`` are JSON lists of lines; secrets appear only as [set]/[changed].
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("token_id", sa.String(40), nullable=True),
    sa.Column("client_id", sa.String(100), nullable=True),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("target", sa.String(200), nullable=True),
    sa.Column("peer", sa.String(64), nullable=True),
    sa.Column("changes", Json, nullable=False, server_default="[]"),
    sa.Column("weakens", Json, nullable=False, server_default="[]"),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_client_id", "client_id", "id"),
)

# Orders (issue #16): one row per (source, external order id), replaced by a newer event of the same
# order; money in integer minor units of ``currency``.
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("source_id", sa.String(40), nullable=False),
    sa.Column("external_id", sa.String(200), nullable=False),
    sa.Column("profile_id", sa.String(40), nullable=True, index=True),
    sa.Column("status", sa.String(40), nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("subtotal_minor", sa.BigInteger, nullable=True),
    sa.Column("tax_minor", sa.BigInteger, nullable=True),
    sa.Column("shipping_minor", sa.BigInteger, nullable=True),
    sa.Column("discount_minor", sa.BigInteger, nullable=True),
    sa.Column("placed_at", sa.BigInteger, nullable=False),
    sa.Column("event_at", sa.BigInteger, nullable=False),
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("source_id", "external_id"),
    sa.Index("ix_orders_client_placed", "client_id", "placed_at"),
)

order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("order_id", sa.String(40), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sku", sa.String(500), nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("unit_price_minor", sa.BigInteger, nullable=True),
    sa.Column("total_minor", sa.BigInteger, nullable=True),
)

# A profile's purchase facts per currency, recomputed from its orders whenever they change.
profile_purchases = sa.Table(
    "profile_purchases",
    metadata,
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("order_count", sa.Integer, nullable=False),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("first_order_at", sa.BigInteger, nullable=False),
    sa.Column("last_order_at", sa.BigInteger, nullable=False),
)

# A client's connection to a marketing provider (issue #16): the environment variable holding its key.
provider_connections = sa.Table(
    "provider_connections",
    metadata,
    sa.Column("client_id", sa.String(100), primary_key=True),
    sa.Column("type", sa.String(32), primary_key=True),
    sa.Column("key_env", sa.String(200), nullable=False),
    sa.Column("pod", sa.String(10), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# The free-text index (migrations 0010, 0013) is built in SQL that SQLAlchemy cannot describe: an
# FTS5 virtual table with its shadow tables on SQLite; on PostgreSQL a trigram table beside the log,
# its mark and the inserting transaction's id on each request (hookbay.store.search).
SEARCH_OBJECTS = frozenset({"requests_fts", "requests_fts_data", "requests_fts_idx", "requests_fts_docsize",
                            "requests_fts_config", "requests_fts_content", "requests_fts_state",
                            "request_text", "request_text_state", "ix_request_text_trgm", "text_txid",
                            "ix_requests_text_txid"})


# PostgreSQL's partitions of ``requests`` (``hookbay.store.partitions``) are not tables of the schema.
PARTITION_TABLE = re.compile(r"^requests_(p\d{8}|default|partitioned)$")


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Schema comparison (autogenerate) leaves the free-text index and the partitions alone."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    if isinstance(table, sa.Table) and PARTITION_TABLE.match(table.name):
        return False
    return name not in SEARCH_OBJECTS


def include_object_partitioned(obj: object, name: str | None, type_: str, reflected: bool,
                               compare_to: object) -> bool:
    """:func:`include_object` for the partitioned layout, whose idempotency index cannot be unique
    (PostgreSQL wants the partition key in it); the writer's per-key advisory lock stands in."""
    return name != "uq_requests_idempotency" and include_object(obj, name, type_, reflected, compare_to)
