"""The in-process worker gives the event loop back to a saturated ingest, and only then."""

from __future__ import annotations

import asyncio

import pytest

from hookbay.ingest.endpoint import Ingest
from hookbay.processing.worker import Worker
from hookbay.settings import Settings


def _worker(peaks: list[int], **over: object) -> Worker:
    settings = Settings(worker_batch=100, worker_yield_ratio=8.0, worker_backoff_inflight=32, **over)  # type: ignore[arg-type]
    return Worker(None, None, settings, worker_id="w", ingest_load=lambda: peaks.pop(0))  # type: ignore[arg-type]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(round(s, 6))

    monkeypatch.setattr("hookbay.processing.worker.asyncio.sleep", fake_sleep)
    return slept


def test_behind_and_saturated_waits_as_long_as_the_cycle_then_ratio_times(sleeps: list[float]) -> None:
    w = _worker([64] * (Worker.BURST_BATCHES + 2))

    async def go() -> None:
        for _ in range(Worker.BURST_BATCHES + 2):
            await w._yield_to_ingest(0.01)

    asyncio.run(go())
    assert sleeps == [0.01] * Worker.BURST_BATCHES + [0.08, 0.08]


def test_never_waits_while_ingest_is_not_saturated(sleeps: list[float]) -> None:
    w = _worker([3, 31, 0])

    async def go() -> None:
        for _ in range(3):
            await w._yield_to_ingest(0.05)

    asyncio.run(go())
    assert sleeps == []


def test_wait_is_capped(sleeps: list[float]) -> None:
    w = _worker([64] * 20)

    async def go() -> None:
        for _ in range(Worker.BURST_BATCHES + 1):
            await w._yield_to_ingest(1.0)

    asyncio.run(go())
    assert max(sleeps) == 2.0


def test_inflight_peak_remembers_a_wave_that_has_already_been_answered() -> None:
    """Group commit answers requests in waves: between two waves nothing may be in flight, yet
    ingest is saturated. The worker asks for the peak since it last asked."""

    ing = Ingest.__new__(Ingest)
    ing.inflight = ing.inflight_peak = 0

    async def request(gate: asyncio.Event) -> None:
        async def wait(*_a: object, **_k: object) -> None:
            await gate.wait()

        ing._handle = wait  # type: ignore[method-assign]
        await ing.handle({}, None, None, "t")  # type: ignore[arg-type]

    async def go() -> tuple[int, int, int]:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(request(gate)) for _ in range(40)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)
        assert ing.inflight == 0
        return ing.take_inflight_peak(), ing.take_inflight_peak(), ing.inflight

    first, second, now = asyncio.run(go())
    assert (first, second, now) == (40, 0, 0)


def test_claim_size_follows_ingest_saturation(sleeps: list[float]) -> None:
    w = _worker([64, 64, 3], worker_batch_busy=25)

    async def go() -> list[int]:
        sizes = [w._batch_size()]
        for _ in range(3):
            await w._yield_to_ingest(0.01)
            sizes.append(w._batch_size())
        return sizes

    assert asyncio.run(go()) == [100, 25, 25, 100]
