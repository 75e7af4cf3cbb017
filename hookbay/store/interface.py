"""Every operation of the store, grouped by the tables it touches: what the layers above type against.

:class:`StoreInterface` is all the groups together; :class:`~hookbay.store.base.Store` implements it
(checked by mypy in ``store/base.py`` and by ``tests/unit/test_store_interface.py``). Where each group's SQL lives:

* ``Lifecycle`` (engines, migrations, the single writer): ``store/core.py``, ``store/writer.py``
  (group commit, ingest rows, the relay enqueue), ``store/dialects.py``.
* ``RateLimits``: ``store/core.py`` and ``store/ratelimit.py``.
* ``Sources``, ``Secrets``: ``store/source_store.py`` (an audit entry of a change is written in the
  same transaction by ``store/audit.py``).
* ``Tokens``: ``store/tokens.py``. ``Audit``: ``store/audit.py``. ``Meta``: ``store/meta.py``.
* ``RequestLog``: ``store/request_log.py``, its rows in ``store/requests.py``, text search in
  ``store/search.py``.
* ``JobQueue``: ``store/jobs.py``; a finished job's profile merges and orders in
  ``store/profiles.py`` and ``store/orders.py``, its set-at-a-time statements in ``store/bulk.py``.
* ``Encryption``: ``store/core.py``, key rotation in ``store/encryption.py`` (the sealing itself
  is :mod:`hookbay.crypto`).
* ``Profiles``: reads and erasure in ``store/profile_store.py``, applying contacts in
  ``store/profiles.py``, the merge trail in ``store/merges.py``.
* ``Deliveries``: ``store/deliveries.py``.

Some tables have a helper class of their own that wraps a store (constructed with one) instead of
adding methods to it: ``OrderStore`` (``store/orders.py``, orders and their lines),
``ProviderStore`` (``store/providers.py``, provider connections), ``AlertStore``
(``store/alerts.py``, alert rules, alerts and the evaluator's lease), ``RelayQueue``
(``store/relay.py``, the relay queue and relay tokens). ``TextIndexer`` (``store/search.py``) is
the thread the store starts to fill the PostgreSQL search index. Their SQL lives in their modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from hookbay.audit import AuditEntry
from hookbay.results import ProcessResult
from hookbay.store.audit import StoredAuditEntry
from hookbay.store.deliveries import AttemptResult, ClaimedDelivery, Delivery, DeliveryContext, DeliveryFilter
from hookbay.store.dialects import Dialect
from hookbay.store.profile_rows import StoredProfile, StoredProfileDetail
from hookbay.store.ratelimit import Lease
from hookbay.store.request_log import RequestFilter
from hookbay.store.requests import (
    ClaimedJob,
    RequestRow,
    StoredRecord,
    StoredRequest,
    StoredRequestSummary,
    TrafficBucket,
)
from hookbay.store.source_rows import StoredSource
from hookbay.store.tokens import StoredToken
from hookbay.store.writer import Writer

T = TypeVar("T")


class Lifecycle(Protocol):
    """Opening, migrating and closing the database, and running work on its connections."""

    @property
    def url(self) -> str:
        """The database URL: the source cache watches a SQLite file's data version through it."""

    @property
    def dialect(self) -> Dialect:
        """SQLite or PostgreSQL specifics (upserts, NOTIFY channel, the libpq URL a listener needs)."""

    @property
    def is_postgres(self) -> bool:
        """Whether a query must take the PostgreSQL path (locks, partitions, text index)."""

    @property
    def writer(self) -> Writer:
        """The single writer: ingest rows and their group commit, its stats for readiness."""

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""

    async def start(self) -> None:
        """Start the writer and background threads, bound to the running event loop."""

    async def close(self) -> None:
        """Stop the threads and release every connection."""

    async def ping(self) -> bool:
        """Whether the database answers a trivial query (liveness)."""

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn`` on a pooled reader connection in a worker thread."""

    async def write(self, fn: Callable[[sa.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in the writer's next group commit; ``durable=False`` skips waiting for the disk."""

    async def write_retrying(self, fn: Callable[[sa.Connection], T], attempts: int = 6) -> T:
        """:meth:`write`, run again when it lost a race with another worker."""

    async def maintain(self, fn: Callable[[sa.Connection], T], *, statement_timeout_ms: int | None = None) -> T:
        """Run ``fn`` in a transaction off the writer, for DDL and long copies."""


class RateLimits(Protocol):
    """Per-source token buckets shared by every process (PostgreSQL)."""

    async def lease_rate_tokens(self, source_id: str, rate: float, burst: float, want: int) -> Lease:
        """Take up to ``want`` tokens from the source's shared bucket."""


class Sources(Protocol):
    """Sources: the endpoints requests arrive at, with their configuration."""

    async def create_source(
        self, *, name: str, client_id: str, config: dict[str, Any], enabled: bool = True, api_key: bool = False,
        secret: str | None = None, audit: AuditEntry | None = None,
    ) -> tuple[StoredSource, str | None]:
        """Add a source; returns it and its API key (shown once) when one was asked for."""

    async def update_source(self, source_id: str, changes: dict[str, Any], client_id: str | None = None,
                            rotate_api_key: bool = False, remove_api_key: bool = False,
                            audit: AuditEntry | None = None) -> tuple[StoredSource, str | None]:
        """Change a source's columns; returns it and a new API key when one was rotated."""

    async def delete_source(self, source_id: str, client_id: str | None = None,
                            audit: AuditEntry | None = None) -> None:
        """Remove a source (its stored requests stay)."""

    async def get_source(self, ref: str, client_id: str | None = None) -> StoredSource:
        """One source by id, token or name; ambiguous names are refused."""

    async def list_sources(self, client_id: str | None = None) -> list[StoredSource]:
        """Every source, or one client's."""

    async def sources_revision(self) -> str:
        """A token that changes with every source change: the source cache reloads on it."""


class Secrets(Protocol):
    """Sources' signing secrets, sealed at rest, with a grace period on rotation."""

    async def source_secrets(self) -> dict[str, list[tuple[str, int | None]]]:
        """Active secrets in clear, newest first, with their expiry, per source."""

    async def add_secret(self, source_id: str, secret: str, *, retire_others_after_s: float | None = None,
                         audit: AuditEntry | None = None) -> None:
        """Add a signing secret, optionally retiring the others after a grace period."""

    async def secret_counts(self) -> dict[str, int]:
        """How many active secrets each source has (listings show whether one is set)."""

    async def secret_count(self, source_id: str) -> int:
        """How many active secrets one source has."""


class RequestLog(Protocol):
    """The request log: every request received, its records, and how long each part is kept."""

    async def search_requests(self, f: RequestFilter) -> list[StoredRequestSummary]:
        """A page of request summaries (no body) matching a filter, text search included."""

    async def get_request(self, request_id: str, client_id: str | None = None) -> StoredRequest:
        """One request, decrypted."""

    async def load_requests(self, ids: list[str]) -> dict[str, StoredRequest]:
        """Requests by id, decrypted, for the worker; one that cannot be opened carries its error."""

    async def records_for(self, request_ids: Iterable[str]) -> dict[str, list[StoredRecord]]:
        """The records parsed from each request, in order."""

    async def traffic(self, client_id: str | None, since_us: int, bucket_us: int) -> list[TrafficBucket]:
        """Request counts per time bucket by verdict, state and rule, for the console's charts."""

    async def count_requests(self, **eq: Any) -> int:
        """How many requests have these exact column values."""

    async def purge_bodies(self, retention: dict[str, int], *, now_us_: int | None = None,
                           dry_run: bool = False) -> dict[str, int]:
        """Drop raw bodies past each source's retention, except those still needed."""

    async def forget_idempotency_keys(self, days_by_source: dict[str, int], *, now_us_: int | None = None) -> int:
        """Clear dedupe keys past each source's window so they may be reused."""


class JobQueue(Protocol):
    """Processing jobs: claimed with a lease by workers that heartbeat, finished atomically."""

    @property
    def job_event(self) -> asyncio.Event | None:
        """Set when new jobs commit, so an idle worker wakes before its poll interval."""

    async def heartbeat(self, worker_id: str) -> None:
        """Say a worker is alive, so its claimed jobs are not taken back."""

    async def retire_worker(self, worker_id: str) -> None:
        """A worker stopping cleanly gives its jobs back."""

    async def claim_jobs(self, worker_id: str, limit: int, lease_s: float,
                         stale_after_s: float | None = None) -> list[ClaimedJob]:
        """Lease due jobs, and those of dead workers, to this worker."""

    async def claim_job_for(self, request_id: str, worker_id: str, lease_s: float) -> list[ClaimedJob]:
        """Lease one request's job (processing it right away, as a test request does)."""

    async def finish_jobs(self, results: Sequence[ProcessResult], *, replace: bool = False) -> None:
        """Store a batch's records, profiles, orders, receipts and deliveries, and drop its jobs."""

    async def retry_job(self, job_id: int, error: str, delay_s: float, give_up: bool, request_id: str,
                        code: str = "processing_error") -> None:
        """Put a job back for later, or fail its request."""

    async def oldest_due_job_age(self) -> float:
        """The processing lag, in seconds."""

    async def queue_depth(self) -> int:
        """How many jobs are queued or running."""


class Encryption(Protocol):
    """Encryption at rest of bodies, sensitive headers and secrets (AAD = the row's id)."""

    def seal(self, plaintext: bytes, aad: str) -> tuple[bytes, str | None]:
        """Encrypt with the active key; returns the blob and the key id (None without a keyring)."""

    def unseal(self, blob: bytes, aad: str) -> bytes:
        """Decrypt, or raise ``EncryptionKeyMissing`` when the key is gone or the data was altered."""

    def seal_request_row(self, row: RequestRow | dict[str, Any]) -> None:
        """Encrypt a request row's body and sensitive headers in place, before it is written."""

    def open_request_row(self, row: Mapping[str, Any]) -> StoredRequest:
        """A whole request row as read, decrypted."""

    def unseal_request_row(self, row: dict[str, Any]) -> None:
        """Decrypt a (possibly partial) request row in place."""

    async def reencrypt(self, batch: int = 500, audit: AuditEntry | None = None) -> dict[str, int]:
        """Re-seal everything written under an older key with the active one."""


class Profiles(Protocol):
    """Contact profiles merged from records, with their consent ledger."""

    async def find_profiles(self, client_id: str | None, *, email: str | None = None,
                            phone: str | None = None) -> list[StoredProfile]:
        """Profiles with this exact email or phone."""

    async def find_profiles_by_name(self, client_id: str | None, words: list[str], *,
                                    limit: int = 50) -> list[StoredProfile]:
        """Profiles whose first or last name starts with each word, for the console's search."""

    async def list_profiles(self, client_id: str | None, *, limit: int = 50,
                            before_id: str | None = None) -> list[StoredProfile]:
        """A page of profiles, newest first."""

    async def get_profile(self, profile_id: str, client_id: str | None = None) -> StoredProfileDetail:
        """One profile with its keys, ledger, requests and orders; a merged-away id finds the survivor."""

    async def erase_profile(self, profile_id: str, client_id: str | None, actor: str,
                            audit: AuditEntry | None = None) -> dict[str, Any]:
        """Right to be forgotten: the profile and everything made from its requests."""


class Deliveries(Protocol):
    """Deliveries of records to destinations: leased attempts, dead letters and retries."""

    @property
    def delivery_event(self) -> asyncio.Event | None:
        """Set when deliveries are queued, so an idle deliverer wakes before its poll interval."""

    def insert_deliveries(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Inside a write: add planned deliveries, never doubling one."""

    async def claim_deliveries(self, worker_id: str, limit: int, lease_s: float,
                               exclude_destinations: set[str] | frozenset[str] = frozenset()) -> list[ClaimedDelivery]:
        """Lease due deliveries to this worker, skipping destinations it has no slot for."""

    async def release_deliveries(self, ids: list[str], worker_id: str) -> None:
        """Give back claimed deliveries as if never claimed."""

    async def delivery_context(self, claimed: list[ClaimedDelivery]) -> dict[str, DeliveryContext]:
        """What an action needs to send each delivery: its record and profile."""

    async def finish_delivery(self, claimed: ClaimedDelivery, result: AttemptResult) -> bool:
        """Record one attempt, unless the lease was lost; returns whether it was recorded."""

    async def finish_deliveries(self, items: list[tuple[ClaimedDelivery, AttemptResult]]) -> list[bool]:
        """Record many attempts in one write."""

    async def list_deliveries(self, f: DeliveryFilter) -> list[Delivery]:
        """A page of deliveries matching a filter, newest first."""

    async def get_delivery(self, delivery_id: str, client_id: str | None = None) -> Delivery:
        """One delivery with its attempt log."""

    async def retry_deliveries(self, f: DeliveryFilter, ids: list[str] | None = None) -> list[str]:
        """Queue dead letters (or, by id, finished deliveries) again; returns the ids queued."""

    async def delivery_counts(self) -> dict[str, int]:
        """How many deliveries are in each state."""


class Tokens(Protocol):
    """API tokens: admin or scoped to one client, stored as hashes."""

    async def list_tokens(self) -> list[StoredToken]:
        """Every token's id, name, client and creation time (never the token)."""

    async def revoke_token(self, token_id: str, audit: AuditEntry | None = None) -> None:
        """Delete a token."""

    async def token_owner(self, token_hash: str) -> tuple[str | None, str] | None:
        """The client and id of the token with this hash, for authentication."""

    async def create_token(self, name: str, client_id: str | None,
                           audit: AuditEntry | None = None) -> tuple[str, str]:
        """A new token: its id and the token itself, shown once."""


class Audit(Protocol):
    """The audit log of changes: who did what to which object."""

    async def record_audit(self, entry: AuditEntry) -> None:
        """Log a change made outside the store's own methods."""

    async def list_audit(self, client_id: str | None = None, *, since_us: int | None = None,
                         until_us: int | None = None, before_id: str | None = None,
                         limit: int = 50, action: str | None = None, actor: str | None = None,
                         target: str | None = None) -> list[StoredAuditEntry]:
        """A page of entries, newest first, filtered."""


class Meta(Protocol):
    """Small key-value settings shared by every process (admin token hash, public URL, leases)."""

    async def get_meta(self, key: str) -> str | None:
        """A value, or None when unset."""

    async def set_meta_if_absent(self, key: str, value: str) -> bool:
        """Set a value unless one exists; returns whether this call set it (first process wins)."""

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value, replacing any."""


class StoreInterface(Lifecycle, RateLimits, Sources, Secrets, RequestLog, JobQueue, Encryption, Profiles,
                     Deliveries, Tokens, Audit, Meta, Protocol):
    """Every operation of the store."""


GROUPS: tuple[type, ...] = (Lifecycle, RateLimits, Sources, Secrets, RequestLog, JobQueue, Encryption, Profiles,
                            Deliveries, Tokens, Audit, Meta)
