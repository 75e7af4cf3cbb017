"""The store: one :class:`Store` over SQLAlchemy Core, the same for every dialect, composed of a
mixin per table group (each in its table group's module, on ``store/core.py``'s engines and writer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hookbay.store.audit import AuditMixin
from hookbay.store.deliveries import DeliveriesMixin
from hookbay.store.encryption import EncryptionMixin
from hookbay.store.jobs import JobQueueMixin
from hookbay.store.meta import MetaMixin
from hookbay.store.profile_store import ProfilesMixin
from hookbay.store.request_log import RequestLogMixin
from hookbay.store.source_store import SecretsMixin, SourcesMixin
from hookbay.store.tokens import TokensMixin

if TYPE_CHECKING:
    from hookbay.store.interface import StoreInterface


class Store(SourcesMixin, SecretsMixin, RequestLogMixin, JobQueueMixin, ProfilesMixin, EncryptionMixin,
            TokensMixin, AuditMixin, MetaMixin, DeliveriesMixin):
    """Every operation of :class:`~hookbay.store.interface.StoreInterface`, on one database."""


if TYPE_CHECKING:
    def _implements(s: Store) -> StoreInterface:
        """mypy fails here when Store and the interface drift apart."""
        return s
