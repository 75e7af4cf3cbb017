from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiosmtplib
import httpx
import pytest

from hookbay.actions.retry import DEFAULT_SCHEDULE, MIN_DELAY, DeliveryRetryPolicy, parse_retry_after

POLICY = DeliveryRetryPolicy()
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_defaults() -> None:
    assert POLICY.schedule == DEFAULT_SCHEDULE
    assert POLICY.schedule[-1] == 24 * 3600
    assert POLICY.max_attempts == len(DEFAULT_SCHEDULE) + 1 == 11
    assert POLICY.retry_after_cap == 3600
    assert hash(POLICY) == hash(DeliveryRetryPolicy())


def test_schedule_bounds_with_seeded_rng() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        for attempt, ceiling in enumerate(POLICY.schedule, start=1):
            delay = POLICY.next_delay(attempt, rng=rng)
            assert delay is not None
            assert MIN_DELAY <= delay <= ceiling


def test_jitter_is_spread_and_reproducible() -> None:
    a = [POLICY.next_delay(8, rng=random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]  # same seed, same delay
    rng = random.Random(99)
    delays = [POLICY.next_delay(10, rng=rng) for _ in range(500)]
    assert min(d for d in delays if d is not None) < 0.2 * 24 * 3600
    assert max(d for d in delays if d is not None) > 0.8 * 24 * 3600


def test_never_below_one_second() -> None:
    class Zero(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return 0.0

    assert POLICY.next_delay(1, rng=Zero()) == MIN_DELAY
    assert DeliveryRetryPolicy(schedule=(0.5,)).next_delay(1, rng=random.Random(0)) == MIN_DELAY


def test_dead_after_last_attempt() -> None:
    assert POLICY.next_delay(POLICY.max_attempts - 1) is not None
    assert POLICY.next_delay(POLICY.max_attempts) is None
    assert POLICY.next_delay(POLICY.max_attempts + 5) is None
    assert POLICY.next_delay(POLICY.max_attempts, retry_after="5") is None
    short = DeliveryRetryPolicy(schedule=(1, 2))
    assert short.max_attempts == 3
    assert short.next_delay(2) is not None
    assert short.next_delay(3) is None
    with pytest.raises(ValueError):
        POLICY.next_delay(0)


def test_schedule_reaches_about_a_day() -> None:
    assert sum(POLICY.schedule) / 2 > 20 * 3600  # the expected total with full jitter
    assert list(POLICY.schedule) == sorted(POLICY.schedule)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": ()}, "schedule"),
        ({"schedule": (5, -1)}, "schedule"),
        ({"schedule": (5, float("inf"))}, "schedule"),
        ({"retry_after_cap": 0.5}, "retry_after_cap"),
    ],
)
def test_invalid_policies(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeliveryRetryPolicy(**kwargs)


def test_schedule_from_a_list_is_normalised() -> None:
    policy = DeliveryRetryPolicy(schedule=[1, 2, 3])  # type: ignore[arg-type]
    assert policy.schedule == (1.0, 2.0, 3.0)
    hash(policy)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (b"30", 30.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Wed, 01 May 2024 12:02:00 GMT", 120.0),
        ("Wednesday, 01-May-24 12:02:00 GMT", 120.0),  # RFC 850
        ("Wed May  1 12:02:00 2024", 120.0),  # asctime, read as UTC
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),  # in the past
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("inf", None),
        ("NaN", None),
        ("12 seconds", None),
        ("Wed, 99 Foo 2024 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(value: str | bytes | None, want: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == want
    assert DeliveryRetryPolicy.parse_retry_after(value, now=NOW) == want


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("120", 120.0),
        ("0", MIN_DELAY),  # never below a second
        ("0.2", MIN_DELAY),
        ("86400", 3600.0),  # clamped to the cap
        ("3600", 3600.0),
    ],
)
def test_next_delay_honours_retry_after(header: str, want: float) -> None:
    assert POLICY.next_delay(1, retry_after=header) == want
    assert DeliveryRetryPolicy(retry_after_cap=60).next_delay(1, retry_after="86400") == 60


def test_next_delay_retry_after_date() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    delay = POLICY.next_delay(2, retry_after=soon)
    assert delay is not None and 290 <= delay <= 300
    past = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert POLICY.next_delay(2, retry_after=past) == MIN_DELAY


def test_garbage_retry_after_falls_back_to_schedule() -> None:
    delay = POLICY.next_delay(1, retry_after="whenever", rng=random.Random(3))
    assert delay == POLICY.next_delay(1, rng=random.Random(3))
    assert delay is not None and delay <= POLICY.schedule[0]


_REQ = httpx.Request("POST", "https://example.com/hook")


@pytest.mark.parametrize(
    ("status", "error", "want"),
    [
        (200, None, "ok"),
        (201, None, "ok"),
        (204, None, "ok"),
        (299, None, "ok"),
        (None, None, "ok"),  # a non-HTTP action that completed
        (100, None, "fail"),
        (301, None, "fail"),
        (302, None, "fail"),
        (304, None, "fail"),
        (400, None, "fail"),
        (401, None, "fail"),
        (403, None, "fail"),
        (404, None, "fail"),
        (410, None, "fail"),
        (422, None, "fail"),
        (408, None, "retry"),
        (429, None, "retry"),
        (500, None, "retry"),
        (502, None, "retry"),
        (503, None, "retry"),
        (504, None, "retry"),
        (599, None, "retry"),
        (200, httpx.ReadTimeout("late", request=_REQ), "ok"),  # the receiver did answer
        (None, httpx.ConnectError("refused", request=_REQ), "retry"),
        (None, httpx.ConnectTimeout("slow", request=_REQ), "retry"),
        (None, httpx.ReadTimeout("slow", request=_REQ), "retry"),
        (None, httpx.RemoteProtocolError("eof", request=_REQ), "retry"),
        (None, httpx.UnsupportedProtocol("gopher", request=_REQ), "fail"),
        (None, TimeoutError(), "retry"),  # asyncio.TimeoutError is TimeoutError since 3.11
        (None, ConnectionResetError(), "retry"),
        (None, OSError("network unreachable"), "retry"),
        (None, ValueError("bad template"), "fail"),
        (None, KeyError("x"), "fail"),
        (None, aiosmtplib.SMTPResponseException(421, "try later"), "retry"),
        (None, aiosmtplib.SMTPResponseException(451, "greylisted"), "retry"),
        (None, aiosmtplib.SMTPResponseException(550, "no such user"), "fail"),
        (None, aiosmtplib.SMTPSenderRefused(553, "sender refused", "a@b"), "fail"),
        (None, aiosmtplib.SMTPAuthenticationError(535, "bad login"), "fail"),
        (None, aiosmtplib.SMTPDataError(452, "mailbox full"), "retry"),
        (None, aiosmtplib.SMTPServerDisconnected("gone"), "retry"),
        (None, aiosmtplib.SMTPConnectError("refused"), "retry"),
        (None, aiosmtplib.SMTPConnectTimeoutError("slow"), "retry"),
        (None, aiosmtplib.SMTPReadTimeoutError("slow"), "retry"),
        (None, aiosmtplib.SMTPNotSupported("no STARTTLS"), "fail"),
        (
            None,
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "busy", "a@b")]),
            "retry",
        ),
        (
            None,
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "unknown", "a@b")]),
            "fail",
        ),
    ],
)
def test_classify(status: int | None, error: BaseException | None, want: str) -> None:
    assert POLICY.classify(status, error) == want


# --- issue #19: what the mutation run found untested ----------------------------------------------


@pytest.mark.parametrize(("status", "want"), [
    (200, "ok"), (299, "ok"), (300, "fail"), (301, "fail"), (499, "fail"), (500, "retry"), (599, "retry"),
    (600, "fail"), (199, "fail"),
])
def test_classify_status_boundaries(status: int, want: str) -> None:
    assert DeliveryRetryPolicy().classify(status, None) == want


@pytest.mark.parametrize(("code", "want"), [(399, "fail"), (400, "retry"), (499, "retry"), (500, "fail")])
def test_classify_smtp_code_boundaries(code: int, want: str) -> None:
    assert DeliveryRetryPolicy().classify(None, aiosmtplib.SMTPResponseException(code, "x")) == want
    refused = aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, "x", "a@b")])
    assert DeliveryRetryPolicy().classify(None, refused) == want


def test_classify_recipients_without_a_code_is_final() -> None:
    """A refused recipient with no reply code cannot be a 4xx: final, and no TypeError on the way."""
    class NoCode:
        pass

    refused = aiosmtplib.SMTPRecipientsRefused([NoCode()])  # type: ignore[list-item]
    assert DeliveryRetryPolicy().classify(None, refused) == "fail"


def test_a_zero_delay_in_the_schedule_is_refused_and_a_cap_of_min_delay_is_allowed() -> None:
    with pytest.raises(ValueError) as e:
        DeliveryRetryPolicy(schedule=(5, 0))
    assert str(e.value) == "schedule must be a non-empty sequence of positive, finite delays"
    assert DeliveryRetryPolicy(retry_after_cap=MIN_DELAY).next_delay(1, "600") == MIN_DELAY


def test_attempt_zero_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError) as e:
        DeliveryRetryPolicy().next_delay(0)
    assert str(e.value) == "attempt is 1-based"


def test_full_jitter_draws_from_zero_to_the_schedule_entry() -> None:
    calls: list[tuple[float, float]] = []

    class Spy(random.Random):
        def uniform(self, a: float, b: float) -> float:
            calls.append((a, b))
            return 42.0

    assert DeliveryRetryPolicy(schedule=(5, 30)).next_delay(2, rng=Spy()) == 42.0
    assert calls == [(0, 30.0)]


def test_an_overflowing_number_of_seconds_is_unusable() -> None:
    assert parse_retry_after("9" * 400) is None


def test_retry_after_date_is_read_against_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP dates are UTC; a naive ``now`` is UTC too, and the default clock must not be local time."""
    import time

    soon = datetime.now(UTC) + timedelta(seconds=120)
    header = format_datetime(soon, usegmt=True)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert 100 < parse_retry_after(header) <= 120  # type: ignore[operator]
        naive_now = (soon - timedelta(seconds=60)).replace(tzinfo=None)
        assert parse_retry_after(header, now=naive_now) == pytest.approx(60, abs=1)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
