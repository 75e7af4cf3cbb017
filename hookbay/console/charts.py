"""Traffic and failure charts, drawn as inline SVG on the server (no chart library, no script).

:func:`hourly` turns the store's per-bucket counts into bars with their geometry already
computed; the template only writes the rectangles out (Jinja2 escapes every label); :func:`page`
is the Charts page. Colours come
from classes in the console's stylesheet: the CSP forbids inline styles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hookbay.console.base import Console, Ctx, when
from hookbay.ids import now_us
from hookbay.ops import traffic as traffic_ops
from hookbay.store import TrafficBucket
from hookbay.views import iso

HOUR_US = 3_600_000_000
WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 28


@dataclass
class Segment:
    kind: str
    count: int
    y: float
    height: float


@dataclass
class Bar:
    label: str
    title: str
    x: float
    width: float
    total: int
    segments: list[Segment] = field(default_factory=list)


@dataclass
class Chart:
    title: str
    kinds: list[str]
    bars: list[Bar]
    ticks: list[tuple[float, int]]
    totals: dict[str, int]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    plot_bottom: float = HEIGHT - BOTTOM
    plot_right: float = WIDTH - RIGHT

    @property
    def empty(self) -> bool:
        return not any(self.totals.values())


def window(now_us: int, hours: int = 24) -> int:
    """Start of the first of ``hours`` whole-hour buckets, the last one being the current hour."""
    return (now_us // HOUR_US - (hours - 1)) * HOUR_US


def _nice_max(n: int) -> int:
    """A round axis maximum at or above ``n`` (1, 2, 5 × 10^k)."""
    if n <= 4:
        return max(n, 1)
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= n:
                return step * m
        step *= 10


def _hour_label(start_us: int, i: int) -> tuple[str, str]:
    t0 = datetime.fromtimestamp((start_us + i * HOUR_US) / 1e6, UTC)
    t1 = datetime.fromtimestamp((start_us + (i + 1) * HOUR_US) / 1e6, UTC)
    return t0.strftime("%H"), f"{t0:%Y-%m-%d %H:%M}–{t1:%H:%M} UTC"


def stacked(title: str, kinds: list[str], per_bucket: list[dict[str, int]], start_us: int) -> Chart:
    """One bar per hour, its segments stacked bottom-up in the order of ``kinds``."""
    n = len(per_bucket)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    top = _nice_max(max((sum(b.get(k, 0) for k in kinds) for b in per_bucket), default=0))
    slot = plot_w / max(n, 1)
    bars: list[Bar] = []
    for i, counts in enumerate(per_bucket):
        label, when = _hour_label(start_us, i)
        total = sum(counts.get(k, 0) for k in kinds)
        parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in kinds)
        bar = Bar(label=label, title=f"{when}: {parts}", x=LEFT + i * slot + slot * 0.1, width=slot * 0.8,
                  total=total)
        y: float = HEIGHT - BOTTOM
        for k in kinds:
            c = counts.get(k, 0)
            if c:
                h = plot_h * c / top
                y -= h
                bar.segments.append(Segment(kind=k, count=c, y=round(y, 2), height=round(h, 2)))
        bars.append(bar)
    ticks = [(round(HEIGHT - BOTTOM - plot_h * v / top, 2), v) for v in sorted({0, top // 2, top})]
    totals = {k: sum(b.get(k, 0) for b in per_bucket) for k in kinds}
    return Chart(title=title, kinds=kinds, bars=bars, ticks=ticks, totals=totals)


def hourly(rows: list[TrafficBucket], start_us: int, hours: int = 24) -> dict[str, Any]:
    """The console's charts from :meth:`Store.traffic` rows: requests by verdict, processing
    failures, and what rejected requests were rejected for."""
    verdicts: list[dict[str, int]] = [{} for _ in range(hours)]
    failures: list[dict[str, int]] = [{} for _ in range(hours)]
    rules: dict[str, int] = {}
    for r in rows:
        b = r.bucket
        if not 0 <= b < hours:
            continue
        verdicts[b][r.verdict] = verdicts[b].get(r.verdict, 0) + r.n
        if r.verdict == "rejected":
            failures[b]["rejected"] = failures[b].get("rejected", 0) + r.n
            rule = r.rule or "unknown"
            rules[rule] = rules.get(rule, 0) + r.n
        elif r.state == "failed":
            failures[b]["failed"] = failures[b].get("failed", 0) + r.n
    return {
        "traffic": stacked("Requests per hour by verdict", ["accepted", "duplicate", "rejected"], verdicts, start_us),
        "failures": stacked("Failures per hour: rejected at ingest, failed to parse", ["rejected", "failed"],
                            failures, start_us),
        "rules": sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])),
    }


async def page(console: Console, request: Request, ctx: Ctx) -> Response:
    """The last days' traffic and failures, hour by hour."""
    start = window(now_us())
    rows = await traffic_ops.traffic(console.store, ctx.principal, start, HOUR_US)
    return console.render(ctx, "charts.html", generated=when(iso(now_us())), **hourly(rows, start))
