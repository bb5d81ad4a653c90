"""Dates to positions on a chart (pure): the range a chart shows, the scale, the axis ticks.

A log written before the intake bounded dates may hold 0001-01-01 or 9999-12-31 beside dates of
this decade. A chart spans at most ``MAX_SPAN_DAYS``; a date outside its range is drawn at the
nearer edge and says so (``Scale.mark``, ``Scale.note``), so one far-off date cannot squeeze
every other into a pixel.
"""

from __future__ import annotations

import datetime as dt

from services.domain.dates import add_days

# The widest span a chart shows. Dates beyond it (a due date of 9999-12-31 in a log written
# before the intake bounded dates) are drawn at the chart's edge, marked ``data-clamped``, with
# the true date in their ``data-date`` and title.
MAX_SPAN_DAYS = 50 * 365


def chart_range(
    marks: list[dt.date], anchor: dt.date, others: list[dt.date] | None = None
) -> tuple[dt.date, dt.date]:
    """The range a chart shows: from the first to the last date when they span at most
    ``MAX_SPAN_DAYS``. Otherwise the ``MAX_SPAN_DAYS`` window that holds the most ``marks`` (due
    dates; ``anchor``, today, counts as one and decides between equals), widened to the
    ``others`` (bars, expected finishes) that fit beside it: one far-off date cannot squeeze every
    other into a pixel."""
    everything = sorted([*marks, anchor, *(others or [])])
    if (everything[-1] - everything[0]).days <= MAX_SPAN_DAYS:
        return everything[0], everything[-1]
    ordered = sorted([*marks, anchor])
    best: tuple[int, int, dt.date, dt.date] | None = None  # (-count, distance, first, last)
    first = 0
    for last, day in enumerate(ordered):
        while (day - ordered[first]).days > MAX_SPAN_DAYS:
            first += 1
        lo, hi = ordered[first], day
        distance = (
            0 if lo <= anchor <= hi else min(abs((anchor - lo).days), abs((hi - anchor).days))
        )
        candidate = (-(last - first + 1), distance, lo, hi)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    assert best is not None
    _, _, lo, hi = best
    lo = min(d for d in everything if d >= add_days(hi, -MAX_SPAN_DAYS))
    hi = max(d for d in everything if d <= add_days(lo, MAX_SPAN_DAYS))
    return lo, hi


def padded(lo: dt.date, hi: dt.date, before: int, after: int) -> tuple[dt.date, dt.date]:
    return add_days(lo, -before), add_days(hi, after)


class Scale:
    """Dates to x. A date outside [start, end] is drawn at the nearer edge (``clamped``)."""

    def __init__(self, start: dt.date, end: dt.date, left: float, width: float) -> None:
        self.start = start
        self.end = end
        self.days = max(1, (end - start).days)
        self.left = left
        self.px = width / self.days

    def x(self, d: dt.date) -> float:
        days = min(max((d - self.start).days, 0), self.days)
        return round(self.left + days * self.px, 1)

    def clamped(self, d: dt.date) -> str:
        """``before`` or ``after`` the chart's range, or ``""`` when ``d`` is inside it."""
        return "before" if d < self.start else "after" if d > self.end else ""

    def mark(self, d: dt.date) -> str:
        """``data-date`` (the true date), and ``data-clamped`` when it is drawn at an edge."""
        side = self.clamped(d)
        return f'data-date="{d.isoformat()}"' + (f' data-clamped="{side}"' if side else "")

    def note(self, d: dt.date) -> str:
        """Words for a title: the date, and where it is drawn when it is off the chart."""
        side = self.clamped(d)
        return d.isoformat() + (
            f" (off the chart: drawn at its {_EDGE[side]} edge)" if side else ""
        )


_EDGE = {"before": "left", "after": "right"}


TICK_MONTHS = (1, 2, 3, 6, 12, 24, 60, 120, 240, 600, 1200)


def months(start: dt.date, end: dt.date, most: int = 1000) -> list[dt.date]:
    """The first days of months in [start, end], every n-th month so that there are at most
    ``most`` (n from ``TICK_MONTHS``: 1, 2, 3, 6 months, 1, 2, 5, 10, ... years)."""
    count = (end.year - start.year) * 12 + end.month - start.month + 1
    step = next((n for n in TICK_MONTHS if count / n <= most), TICK_MONTHS[-1])
    index = start.year * 12 + start.month - 1
    index += -index % step  # the first month on the step's grid (January for years)
    out = []
    while (year := index // 12) <= end.year:
        first = dt.date(year, index % 12 + 1, 1)
        if first > end:
            break
        if first >= start:
            out.append(first)
        index += step
    return out
