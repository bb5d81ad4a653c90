"""The milestone trend analysis as SVG (pure, deterministic).

x: the report dates; y: each milestone's expected finish on that date. The two axes have scales
of their own, so the plot fills its frame (a shared scale leaves the future half of a square
empty); the diagonal, where the expected finish is the report date, is drawn where both ranges
meet. Every series has an Okabe–Ito colour, a marker shape and a dash pattern of its own; lines
that share points are drawn side by side; the names stand in a column right of the plot, pushed
apart so that none covers another or a line.
"""

from __future__ import annotations

import datetime as dt

from services.dashboard.labels import fit, spread
from services.dashboard.marks import DASHES, MARKERS, SERIES_COLOURS, STYLE, esc, marker
from services.dashboard.scale import Scale, chart_range, months, padded
from services.domain.dates import add_days
from services.domain.reporting import Trend, TrendSeries

WIDTH = 1000
LEFT = 88  # tick labels and the y axis title
TOP = 24
GUTTER = 230  # the names, right of the plot
PLOT_W = WIDTH - LEFT - GUTTER
PLOT_H = 400
STEP = 17  # the least distance between two names' baselines
SHARED = 4  # px between lines that share a point


def points_of(s: TrendSeries) -> list[tuple[dt.date, dt.date]]:
    """(report date, expected finish) of a series; an achieved one ends on the diagonal."""
    points = [(p.report_date, p.expected_finish) for p in s.points]
    if s.achieved_on is not None:
        points = [pt for pt in points if pt[0] < s.achieved_on] + [(s.achieved_on, s.achieved_on)]
    return points


def ticks(start: dt.date, end: dt.date, most: int) -> list[tuple[dt.date, str]]:
    """Months when the range holds three or more, else Mondays (every n-th)."""
    firsts = months(start, end, most)
    if len(firsts) >= 3 or (end - start).days > 120:
        return [(m, m.strftime("%b %Y")) for m in firsts]
    monday = add_days(start, (7 - start.weekday()) % 7)
    weeks = (end - monday).days // 7 + 1
    step = 7 * max(1, -(-weeks // max(1, most)))
    out = []
    while monday <= end:
        out.append((monday, monday.isoformat()))
        if monday == (after := add_days(monday, step)):
            break  # the end of the calendar (add_days saturates at 9999-12-31)
        monday = after
    return out


def forecasts_of(s: TrendSeries) -> list[tuple[dt.date, dt.date]]:
    """(report date, forecast) of a series, where the pace of work gave one, before it was
    achieved."""
    return [
        (p.report_date, p.forecast)
        for p in s.points
        if p.forecast is not None and (s.achieved_on is None or p.report_date < s.achieved_on)
    ]


def trend_svg(trend: Trend, *, title: str = "", forecasts: bool = False) -> str:
    """One line per milestone: its expected finish (y) at each report date (x); the diagonal
    where they are equal (a line that meets it has been reached). ``forecasts``: beside each
    line, a thin dotted one in the same colour for the forecast from the pace of work on each
    report date."""
    series = [(s, points_of(s)) for s in trend.series]
    dates = list(trend.report_dates)
    if not dates or not any(pts for _, pts in series):
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" class="trend" role="img" width="400" '
            'height="60">'
            '<text x="10" y="30">No report dates yet: plan a milestone first.</text></svg>'
        )
    plot_h = max(PLOT_H, STEP * len(series) + 20)
    xs = Scale(*_padded(chart_range(dates, dates[-1])), LEFT, PLOT_W)
    # the forecasts do not widen the scale: an early forecast from a slow pace can lie months
    # out and would flatten every line; beyond the range a forecast line runs along its edge
    finishes = [b for _, pts in series for _, b in pts]
    ys = Scale(*_padded(chart_range(finishes, dates[-1])), 0, plot_h)

    def y(d: dt.date) -> float:
        return round(TOP + plot_h - ys.x(d), 1)

    parts = [_frame(xs, ys, y, plot_h)]
    shared = _offsets([[(xs.x(a), y(b)) for a, b in pts] for _, pts in series])
    ends: list[tuple[float, float, int]] = []
    for n, (s, pts) in enumerate(series):
        drawn = [
            (xs.x(a), round(y(b) + off, 1)) for (a, b), off in zip(pts, shared[n], strict=True)
        ]
        if forecasts and len(ahead := forecasts_of(s)) > 0:
            parts.append(_forecast_line(n, s, ahead, xs, y))
        parts.append(_series(n, s, pts, drawn, xs, ys))
        ends.append((drawn[-1][1], drawn[-1][0], n))
    parts.append(_names(series, sorted(ends), xs.x(dates[-1]), plot_h))
    height = TOP + plot_h + 56
    parts.append(
        f'<text x="{LEFT + PLOT_W / 2}" y="{TOP + plot_h + 46}" text-anchor="middle">'
        "report date</text>"
        f'<text transform="translate(16,{TOP + plot_h / 2}) rotate(-90)" '
        'text-anchor="middle">expected finish</text>'
    )
    label = title or f"Milestone trend analysis of {trend.project_id}"
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="trend" role="img" '
        'aria-labelledby="trend-title" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"><title id="trend-title">'
        f"{esc(label)}</title><style>{STYLE}</style>{''.join(parts)}</svg>"
    )


def _padded(span: tuple[dt.date, dt.date]) -> tuple[dt.date, dt.date]:
    """A range widened by 3 % on each side (a day at least), so that markers stay inside."""
    pad = max(1, (span[1] - span[0]).days * 3 // 100)
    return padded(*span, pad, pad)


def _frame(xs: Scale, ys: Scale, y, plot_h: float) -> str:
    bottom = TOP + plot_h
    out = [
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{plot_h}" '
        'fill="#fafafa" stroke="#bdbdbd"/>'
    ]
    for d, words in ticks(xs.start, xs.end, PLOT_W // 90):
        x = xs.x(d)
        out.append(
            f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{bottom}"/>'
            f'<text class="tick" x="{x}" y="{bottom + 19}" text-anchor="middle">{words}</text>'
        )
    for d, words in ticks(ys.start, ys.end, int(plot_h // 24)):
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y(d)}" x2="{LEFT + PLOT_W}" y2="{y(d)}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y(d) + 4}" text-anchor="end">{words}</text>'
        )
    first, last = max(xs.start, ys.start), min(xs.end, ys.end)
    if first < last:
        out.append(
            f'<line class="diagonal" data-from="{first.isoformat()}" data-to="{last.isoformat()}" '
            f'x1="{xs.x(first)}" y1="{y(first)}" x2="{xs.x(last)}" y2="{y(last)}">'
            "<title>expected finish = report date: "
            "a line that meets it has been reached</title></line>"
        )
    return "".join(out)


def _offsets(lines: list[list[tuple[float, float]]]) -> list[list[float]]:
    """A vertical offset per point, so that lines through the same point run side by side."""
    at: dict[tuple[float, float], list[int]] = {}
    for n, pts in enumerate(lines):
        for p in pts:
            if n not in at.setdefault(p, []):
                at[p].append(n)
    return [
        [round((at[p].index(n) - (len(at[p]) - 1) / 2) * SHARED, 1) for p in pts]
        for n, pts in enumerate(lines)
    ]


def _style(n: int) -> tuple[str, str, str]:
    """Colour, marker and dash of the n-th series: no two of the first 35 alike."""
    colours = len(SERIES_COLOURS)
    return (
        SERIES_COLOURS[n % colours],
        MARKERS[n % len(MARKERS)],
        DASHES[(n // colours) % len(DASHES)],
    )


def _series(n, s: TrendSeries, pts, drawn, xs: Scale, ys: Scale) -> str:
    colour, shape, dash = _style(n)
    state = (
        f"achieved {xs.note(s.achieved_on)}" if s.achieved_on else f"expected {ys.note(pts[-1][1])}"
    )
    return (
        f'<g class="series-group" data-milestone="{esc(s.milestone_id)}">'
        f"<title>{esc(s.name)}: {state}</title>"
        f'<polyline class="series" data-milestone="{esc(s.milestone_id)}" '
        f'points="{" ".join(f"{a},{b}" for a, b in drawn)}" stroke="{colour}"'
        + (f' stroke-dasharray="{dash}"' if dash else "")
        + "/>"
        + "".join(
            marker(
                shape,
                px,
                py,
                colour,
                f'data-date="{a.isoformat()}" data-expected="{b.isoformat()}"'
                + (' data-clamped="true"' if xs.clamped(a) or ys.clamped(b) else ""),
                f"<title>{a.isoformat()}: {esc(s.name)} expected {ys.note(b)}</title>",
            )
            for (a, b), (px, py) in zip(pts, drawn, strict=True)
        )
        + "</g>"
    )


def _forecast_line(n: int, s: TrendSeries, pts, xs: Scale, y) -> str:
    colour, _, _ = _style(n)
    return (
        f'<polyline class="forecast-line" data-milestone="{esc(s.milestone_id)}" '
        f'points="{" ".join(f"{xs.x(a)},{y(b)}" for a, b in pts)}" stroke="{colour}" '
        'stroke-width="1.2" stroke-dasharray="1 3" fill="none">'
        f"<title>{esc(s.name)}: forecast from the pace of work, "
        f"{pts[-1][1].isoformat()} on {pts[-1][0].isoformat()}</title></polyline>"
    )


def _names(series, ends: list[tuple[float, float, int]], last_x: float, plot_h: float) -> str:
    """The names in the column right of the plot, each as near its line's end as the others
    allow, with a leader from the lines that reach the last report date."""
    gx = LEFT + PLOT_W + 14
    baselines = spread([e[0] + 4 for e in ends], STEP, TOP + 10, TOP + plot_h + 4)
    out = []
    for (ey, ex, n), base in zip(ends, baselines, strict=True):
        s = series[n][0]
        colour, shape, dash = _style(n)
        words = fit(s.name + (" ✓" if s.achieved_on else ""), 12, WIDTH - gx - 22)
        if ex >= last_x:
            out.append(
                f'<line class="leader" x1="{ex + 6}" y1="{ey}" x2="{gx - 2}" y2="{base - 4}"/>'
            )
        out.append(
            f'<g class="series-key" data-milestone="{esc(s.milestone_id)}">'
            f'<line x1="{gx}" y1="{base - 4}" x2="{gx + 12}" y2="{base - 4}" stroke="{colour}" '
            f'stroke-width="2"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + "/>"
            + marker(shape, gx + 6, base - 4, colour, cls="key-point")
            + f'<text class="series-label" x="{gx + 18}" y="{base}">{esc(words)}</text></g>'
        )
    return "".join(out)
