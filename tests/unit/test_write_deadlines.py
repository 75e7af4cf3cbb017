"""The writer's write timeouts (hookbay.store.writer._Deadlines) on a clock the test moves: one
sweep timer per loop, a tenth of the timeout apart, failing exactly the writes whose deadline has
come and forgetting the answered ones (issue #19: the mutation run found these untested)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hookbay.store.writer import WriteTimeout, _Deadlines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.timers.append((delay, fn, args))

    def fire(self) -> float:
        """Run the one pending timer after its delay; returns the delay."""
        assert len(self.timers) == 1, self.timers
        delay, fn, args = self.timers.pop()
        self.now += delay
        fn(*args)
        return delay


@pytest.fixture
def futures() -> Iterator[Callable[[], asyncio.Future[Any]]]:
    loop = asyncio.new_event_loop()
    yield loop.create_future
    loop.close()


def test_one_timer_a_tenth_of_the_timeout_apart_until_the_deadline(futures: Callable[[], asyncio.Future[Any]]) -> None:
    clock = Clock()
    d = _Deadlines(clock)  # type: ignore[arg-type]
    f1 = futures()
    d.watch(f1, 2.5)  # deadline 102.5 (binary fractions: the clock adds up exactly)
    assert d.armed and [t[0] for t in clock.timers] == [0.25]
    assert clock.fire() == 0.25
    f2 = futures()
    d.watch(f2, 2.5)  # deadline 102.75; already armed: no second timer
    assert len(clock.timers) == 1
    for _ in range(8):  # 100.5 ... 102.25: nothing has expired yet
        assert clock.fire() == 0.25
        assert not f1.done() and not f2.done()
    clock.fire()  # 102.5: f1's deadline exactly (deadline <= now expires)
    exc = f1.exception()
    assert isinstance(exc, WriteTimeout) and exc.detail == {"reason": "timeout"}
    assert not f2.done() and d.armed
    f2.set_result("answered")
    clock.fire()
    assert f2.result() == "answered"
    assert not d.q and not d.armed and clock.timers == []


def test_answered_writes_are_forgotten_at_the_next_sweep(futures: Callable[[], asyncio.Future[Any]]) -> None:
    clock = Clock()
    d = _Deadlines(clock)  # type: ignore[arg-type]
    done, waiting = futures(), futures()
    d.watch(done, 5.0)
    d.watch(waiting, 5.0)
    done.set_result(1)
    clock.fire()
    assert [f for _, f in d.q] == [waiting] and d.armed
    assert not waiting.done()


def test_a_short_timeout_sweeps_every_10_ms_at_most(futures: Callable[[], asyncio.Future[Any]]) -> None:
    clock = Clock()
    d = _Deadlines(clock)  # type: ignore[arg-type]
    f = futures()
    d.watch(f, 0.05)
    assert clock.fire() == 0.01
    assert [t[0] for t in clock.timers] == [0.01] and d.armed
    assert not d.q[0][1].done()
