"""Delivery retry policy: which outcomes are worth another attempt, and when.

A fixed schedule that reaches about a day, with full jitter so that a receiver coming back from an
outage is not hit by every queued delivery at the same second; after the last entry the delivery is
dead-lettered. ``Retry-After`` from a 429/503 is honoured but capped, so one receiver cannot park a
delivery for weeks.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

try:  # optional: only the email action needs it
    import aiosmtplib
except ImportError:  # pragma: no cover - exercised only without the SMTP extra
    aiosmtplib = None  # type: ignore[assignment]

__all__ = ["DEFAULT_SCHEDULE", "MIN_DELAY", "DeliveryRetryPolicy", "Verdict", "parse_retry_after"]

Verdict = Literal["ok", "retry", "fail"]

DEFAULT_SCHEDULE: tuple[float, ...] = (
    5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600,
)  # fmt: skip
MIN_DELAY = 1.0
"""No retry sooner than this: a zero delay from jitter or a past Retry-After date would spin."""

_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_RNG = random.Random()
# httpx transport errors that no amount of waiting will fix.
_PERMANENT_TRANSPORT = (httpx.UnsupportedProtocol,)


def parse_retry_after(value: str | bytes | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date); None if unusable.

    A date in the past gives 0. Dates without a zone (asctime form) are read as UTC, as RFC 9110
    says all HTTP dates are.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return max(0.0, (when - current).total_seconds())


def _smtp_outcome(error: BaseException) -> Verdict | None:
    """SMTP replies: 4xx is "try again later" by definition (RFC 5321), 5xx is final."""
    if aiosmtplib is None or not isinstance(error, aiosmtplib.SMTPException):
        return None
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [getattr(r, "code", 0) for r in error.recipients]
        return "retry" if any(400 <= c < 500 for c in codes) else "fail"
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return "retry" if 400 <= error.code < 500 else "fail"
    if isinstance(error, OSError):  # disconnected, connect error, timeouts
        return "retry"
    return "fail"  # e.g. SMTPNotSupported: the server lacks STARTTLS/AUTH; waiting will not add it


@dataclass(frozen=True)
class DeliveryRetryPolicy:
    """When to retry a delivery; a value object so sources can override it and tests can pin it."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    retry_after_cap: float = 3600

    def __post_init__(self) -> None:
        schedule = tuple(float(s) for s in self.schedule)
        if not schedule or any(not math.isfinite(s) or s <= 0 for s in schedule):
            raise ValueError("schedule must be a non-empty sequence of positive, finite delays")
        if not math.isfinite(self.retry_after_cap) or self.retry_after_cap < MIN_DELAY:
            raise ValueError(f"retry_after_cap must be at least {MIN_DELAY} s")
        object.__setattr__(self, "schedule", schedule)  # accept lists from config, stay hashable

    @property
    def max_attempts(self) -> int:
        """The first attempt plus one per schedule entry."""
        return len(self.schedule) + 1

    parse_retry_after = staticmethod(parse_retry_after)

    def classify(self, status: int | None, error: BaseException | None) -> Verdict:
        """Verdict on one attempt. A status wins over an error (the receiver did answer); neither
        means a non-HTTP action (email) that completed."""
        if status is not None:
            if 200 <= status < 300:
                return "ok"
            if status in (408, 429) or 500 <= status < 600:
                return "retry"
            return "fail"  # 1xx/3xx (redirects are not followed) and other 4xx are the sender's fault
        if error is None:
            return "ok"
        smtp = _smtp_outcome(error)
        if smtp is not None:
            return smtp
        if isinstance(error, _PERMANENT_TRANSPORT):
            return "fail"
        # TimeoutError (asyncio.TimeoutError is the same class since 3.11) is an OSError.
        if isinstance(error, httpx.TransportError | OSError):
            return "retry"
        return "fail"

    def next_delay(
        self, attempt: int, retry_after: str | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds before the next attempt after attempt number ``attempt`` (1-based) failed, or
        None when it was the last one and the delivery is dead-lettered."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        if attempt >= self.max_attempts:
            return None
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(max(hinted, MIN_DELAY), self.retry_after_cap)
        return max(MIN_DELAY, (rng or _RNG).uniform(0, self.schedule[attempt - 1]))
