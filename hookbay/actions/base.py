"""What every action type shares: the config base class an action module extends, what one run of
it receives (:class:`ActionRun`) and what it reports (:class:`ActionResult`).

An action type is one module: a subclass of :class:`ActionConfig` with a ``type`` literal, its
fields, its destination key and its ``execute``; :mod:`hookbay.actions.registry` lists it. Actions
know nothing of the store: the deliverer hands each run the record, the profile, an HTTP client,
the settings and a way to read the raw request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hookbay.actions.conditions import ConditionError, compile_condition
from hookbay.actions.retry import DeliveryRetryPolicy
from hookbay.settings import Settings

EXCERPT = 500
"""Characters of a destination's answer kept in the attempt log."""


class Permanent(Exception):
    """The action cannot succeed as configured or with this record; retrying will not help."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What one run reports: an HTTP-ish status (None for a non-HTTP action that completed), a
    response excerpt, a ``Retry-After`` hint, or ``skipped`` when there was rightly nothing to do."""

    status: int | None = None
    excerpt: str | None = None
    retry_after: str | None = None
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """The parts of the source an action may use or show (templates name the source)."""

    id: str
    name: str
    client_id: str
    allow_private_destinations: bool


def current_consent(record: dict[str, Any], profile: dict[str, Any] | None) -> dict[str, bool | None]:
    """Consent per channel at send time: the profile's ledger, else the record's own flags."""
    if profile is not None:
        return dict(profile.get("consent") or {})
    return {c["channel"]: bool(c["granted"]) for c in (record.get("consents") or ())
            if isinstance(c, dict) and "channel" in c}


@dataclass(frozen=True, slots=True)
class ActionRun:
    """One delivery as its action sees it. ``raw_request`` reads the request's stored body and
    Content-Type (the body is None once retention purged it or it was erased)."""

    delivery_id: str
    request_id: str
    record_idx: int
    action_name: str
    source: SourceInfo
    record: dict[str, Any]
    profile: dict[str, Any] | None
    http: httpx.AsyncClient
    settings: Settings
    raw_request: Callable[[], Awaitable[tuple[bytes | None, str | None]]]

    @property
    def consent(self) -> dict[str, bool | None]:
        return current_consent(self.record, self.profile)


class ActionConfig(BaseModel):
    """The fields every action has. A subclass adds ``type: Literal["<name>"]`` (the discriminator
    of the config's ``actions`` union), its own fields, :meth:`destination` and :meth:`execute`."""

    model_config = ConfigDict(extra="forbid")

    if TYPE_CHECKING:
        type: str  # each subclass declares its Literal; a field here would move it first in dumps

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

    def runs_on(self, kind: str) -> bool:
        """Whether this action runs on a record of ``kind`` (contact, record or order)."""
        return kind in (("contact", "record") if self.on is None else (self.on,))

    @field_validator("when")
    @classmethod
    def _condition(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compile_condition(v)
            except ConditionError as e:
                raise ValueError(f"invalid condition: {e}") from None
        return v

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            DeliveryRetryPolicy(schedule=tuple(v))
        return v

    def display_name(self, index: int) -> str:
        """The name deliveries show: ``name``, else ``<type>-<position from 1>``."""
        return self.name or f"{self.type}-{index + 1}"

    def destination(self, settings: Settings) -> str:
        """The key per-destination concurrency is counted by (one slow receiver cannot take every
        slot): deliveries to the same host or server share it."""
        raise NotImplementedError

    async def execute(self, run: ActionRun) -> ActionResult:
        """Run once for one record. Raise :class:`Permanent` for what retrying cannot fix; any
        other exception is classified by the retry policy (``status_code``, ``retry_after`` and
        ``response_excerpt`` attributes are read when present)."""
        raise NotImplementedError

    # --- tenant containment (hookbay.containment asks every action) ------------------------

    def admin_choices(self, allow_private: bool) -> set[tuple[Any, ...]]:
        """The admin-only choices this action carries, as comparable tuples tagged with the type: a
        client may send them back unchanged but not make new ones. ``allow_private`` is the
        source's ``allow_private_destinations``."""
        return set()

    def client_refusals(self, allowed: set[tuple[Any, ...]], allow_private: bool) -> list[tuple[str, str]]:
        """``(field, message)`` for each admin-only choice here that ``allowed`` (the stored
        config's :meth:`admin_choices`) lacks."""
        return []

    def config_refusals(self, settings: Settings) -> list[tuple[str, str]]:
        """``(field, message)`` for each value nobody may set on this server."""
        return []


async def read_excerpt(r: httpx.Response) -> str:
    """The start of the answer only: a destination cannot make the worker hold a huge body."""
    buf = bytearray()
    async for chunk in r.aiter_bytes():
        buf += chunk
        if len(buf) >= EXCERPT * 4:
            break
    return bytes(buf[: EXCERPT * 4]).decode(r.encoding or "utf-8", errors="replace")[:EXCERPT]
