"""Storage: one interface (:class:`StoreInterface`, implemented by :class:`Store`), a dialect each for
SQLite and PostgreSQL."""

from hookbay.settings import Settings
from hookbay.store.base import Store
from hookbay.store.core import hash_secret, wait_for_wakeup
from hookbay.store.interface import StoreInterface
from hookbay.store.request_log import RequestFilter
from hookbay.store.requests import ClaimedJob, TrafficBucket
from hookbay.store.source_rows import StoredSource

__all__ = ["ClaimedJob", "RequestFilter", "Store", "StoreInterface", "StoredSource", "TrafficBucket", "hash_secret",
           "open_store", "wait_for_wakeup"]


def open_store(settings: Settings) -> Store:
    from hookbay.crypto import Keyring
    from hookbay.errors import SettingsError

    try:
        keyring = Keyring.parse(settings.encryption_key or None)
    except ValueError as e:
        raise SettingsError(f"HOOKBAY_ENCRYPTION_KEY is malformed: {e} "
                            "(`hookbay keys generate` prints a valid entry)") from None
    return Store(
        settings.effective_database_url,
        busy_timeout_ms=settings.busy_timeout_ms,
        batch_max=settings.batch_max,
        keyring=keyring,
        sensitive_headers=frozenset(h.strip().lower() for h in settings.sensitive_headers.split(",") if h.strip()),
    )
