"""The worker's job retry policy (hookbay.processing.worker.JobRetryPolicy): exponential back-off with full
jitter, capped, and a fixed number of attempts. Issue #19: it was reached only through the
poison-job integration test, which cannot see the bounds of the jitter."""

from __future__ import annotations

import random

import pytest

from hookbay.processing.worker import JobRetryPolicy


@pytest.fixture
def bounds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    seen: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        seen.append((a, b))
        return b

    monkeypatch.setattr(random, "uniform", uniform)
    return seen


def test_back_off_doubles_from_base_then_caps(bounds: list[tuple[float, float]]) -> None:
    p = JobRetryPolicy(base=1.5, cap=10.0)
    assert [p.delay(a) for a in (0, 1, 2, 3, 4)] == [1.5, 1.5, 3.0, 6.0, 10.0]
    assert bounds == [(0, 1.5), (0, 1.5), (0, 3.0), (0, 6.0), (0, 10.0)]


def test_defaults(bounds: list[tuple[float, float]]) -> None:
    p = JobRetryPolicy()
    assert (p.base, p.cap, p.max_attempts) == (1.0, 300.0, 5)
    assert p.delay(1) == 1.0 and p.delay(9) == 256.0 and p.delay(10) == 300.0


def test_gives_up_at_max_attempts() -> None:
    p = JobRetryPolicy(max_attempts=3)
    assert [p.gives_up(a) for a in (1, 2, 3, 4)] == [False, False, True, True]
    assert JobRetryPolicy().gives_up(4) is False and JobRetryPolicy().gives_up(5) is True


def test_delay_is_random_within_the_bound() -> None:
    p = JobRetryPolicy(base=2.0, cap=100.0)
    draws = {p.delay(3) for _ in range(200)}
    assert all(0 <= d <= 8.0 for d in draws) and len(draws) > 100
