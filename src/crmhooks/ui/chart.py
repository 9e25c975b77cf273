"""Requests per minute by outcome over the last hour, as the geometry of an SVG bar chart.

Pure functions: counts in, rectangles out; the template only draws them. Drawn on the server,
so the page needs no charting script.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from crmhooks.delivery.model import DeliveryStatus

MINUTES = 60
OUTCOMES: tuple[str, ...] = (
    DeliveryStatus.DELIVERED,
    DeliveryStatus.FAILED,
    DeliveryStatus.PENDING,
)
WIDTH, HEIGHT = 720, 130
AXIS = 16  # room under the bars for the time labels


@dataclass(frozen=True)
class Segment:
    outcome: str
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    minute: str  # "HH:MM" (UTC)
    x: float
    width: float
    segments: tuple[Segment, ...]

    @property
    def title(self) -> str:
        counts = ", ".join(f"{s.count} {s.outcome}" for s in self.segments) or "none"
        return f"{self.minute} UTC: {counts}"


@dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    peak: int
    totals: dict[str, int]
    ticks: tuple[tuple[float, str], ...]  # (x, "HH:MM") under the bars
    width: int = WIDTH
    height: int = HEIGHT
    plot_height: int = HEIGHT - AXIS

    @property
    def summary(self) -> str:
        parts = ", ".join(f"{self.totals[o]} {o}" for o in OUTCOMES)
        return f"Requests in the last hour by outcome: {parts}; at most {self.peak} in a minute"


def minute_key(t: datetime) -> str:
    """The bucket a time falls in: ``YYYY-MM-DD HH:MM`` (UTC), as the query groups by."""
    return t.strftime("%Y-%m-%d %H:%M")


def window_start(now: datetime) -> datetime:
    """The first minute shown: the chart ends with the minute ``now`` is in."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)


def build(counts: Iterable[tuple[str, str, int]], now: datetime) -> Chart:
    """The chart of (minute key, outcome, count) rows; minutes outside the hour are left out."""
    start = window_start(now)
    minutes = [start + timedelta(minutes=i) for i in range(MINUTES)]
    index = {minute_key(m): i for i, m in enumerate(minutes)}
    grid = [dict.fromkeys(OUTCOMES, 0) for _ in minutes]
    for key, outcome, n in counts:
        i = index.get(key)
        if i is not None and outcome in OUTCOMES:
            grid[i][outcome] += n
    peak = max((sum(cell.values()) for cell in grid), default=0)
    plot = HEIGHT - AXIS
    step = WIDTH / MINUTES
    bars = []
    for i, cell in enumerate(grid):
        y = float(plot)
        segments = []
        for outcome in OUTCOMES:
            n = cell[outcome]
            if n == 0:
                continue
            h = max(n / peak * (plot - 4), 1.0)
            y -= h
            segments.append(Segment(outcome, n, round(y, 2), round(h, 2)))
        bars.append(
            Bar(minutes[i].strftime("%H:%M"), round(i * step + 1, 2), step - 2, tuple(segments))
        )
    totals = {o: sum(cell[o] for cell in grid) for o in OUTCOMES}
    ticks = tuple(
        (round(i * step + 1, 2), minutes[i].strftime("%H:%M")) for i in range(0, MINUTES, 15)
    )
    return Chart(tuple(bars), peak, totals, ticks)
