"""The console's chart builder: hourly buckets, stacking order and axis scaling."""

from __future__ import annotations

from hookbay.console import charts
from hookbay.store import TrafficBucket

H = charts.HOUR_US


def test_window_ends_with_the_current_hour() -> None:
    now = 1_700_000_000 * 1_000_000 + 123
    start = charts.window(now)
    assert start % H == 0
    assert start <= now < start + 24 * H
    assert now - start >= 23 * H


def test_hourly_counts_verdicts_failures_and_rules() -> None:
    rows = [
        TrafficBucket(bucket=23, verdict="accepted", state="processed", rule=None, n=7),
        TrafficBucket(bucket=23, verdict="accepted", state="failed", rule=None, n=2),
        TrafficBucket(bucket=23, verdict="rejected", state="rejected", rule="signature", n=3),
        TrafficBucket(bucket=0, verdict="duplicate", state="duplicate", rule=None, n=1),
        TrafficBucket(bucket=5, verdict="rejected", state="rejected", rule="method", n=4),
        TrafficBucket(bucket=24, verdict="accepted", state="processed", rule=None, n=99),  # outside the window
    ]
    out = charts.hourly(rows, start_us=0)
    traffic, failures = out["traffic"], out["failures"]
    assert traffic.totals == {"accepted": 9, "duplicate": 1, "rejected": 7}
    assert failures.totals == {"rejected": 7, "failed": 2}
    assert out["rules"] == [("method", 4), ("signature", 3)]
    last = traffic.bars[23]
    assert last.total == 12 and [(s.kind, s.count) for s in last.segments] == [("accepted", 9), ("rejected", 3)]
    # stacked bottom-up, touching, within the plot
    bottom = charts.HEIGHT - charts.BOTTOM
    assert abs(last.segments[0].y + last.segments[0].height - bottom) < 0.01
    assert abs(last.segments[1].y + last.segments[1].height - last.segments[0].y) < 0.01
    assert traffic.ticks[-1][1] == 20  # 12 rounds up to a 1-2-5 axis maximum
    assert all(s.y >= charts.TOP - 0.01 for b in traffic.bars for s in b.segments)
    assert "00:00–01:00 UTC" in traffic.bars[0].title and "1 duplicate" in traffic.bars[0].title
    assert not traffic.empty


def test_an_empty_day_still_draws_its_axes() -> None:
    out = charts.hourly([], start_us=0)
    assert out["traffic"].empty and len(out["traffic"].bars) == 24
    assert [v for _, v in out["traffic"].ticks] == [0, 1]
    assert out["rules"] == []
