"""The charts as SVG (pure, deterministic): the Gantt and the milestone trend analysis.

Every mark carries ``class`` and ``data-*`` attributes (milestone id, date, x) so that tests
and people's own tools can read the chart, and a ``<title>`` so hovering says what it is.
Colour is never the only signal: each milestone carries its health as a word, and marks
differ in shape (bar: tasks' span, filled diamond: due date, hollow dashed diamond: baseline,
circle: achieved).
"""

from __future__ import annotations

import datetime as dt
import re
from html import escape

from services.dashboard.model import ProjectView
from services.dashboard.scale import Scale, chart_range, months, padded
from services.domain.reporting import Trend

HEALTH_COLOURS = {
    "on_track": "#2e7d32",
    "at_risk": "#b26a00",
    "late": "#d84315",
    "missed": "#b71c1c",
    "achieved": "#1565c0",
    "cancelled": "#757575",
}
HEALTH_WORDS = {
    "on_track": "on track",
    "at_risk": "at risk",
    "late": "late",
    "missed": "missed",
    "achieved": "achieved",
    "cancelled": "cancelled",
}
SERIES_COLOURS = (
    "#1565c0",
    "#d84315",
    "#2e7d32",
    "#6a1b9a",
    "#00838f",
    "#ad1457",
    "#4e342e",
    "#283593",
    "#827717",
    "#37474f",
)
DASHES = ("", "6 3", "2 3", "8 3 2 3")

LABEL_W = 300
CHART_W = 900
ROW_H = 26
TOP = 48
STYLE = """
text{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;font-size:12px;fill:#212121}
.axis text{font-size:11px;fill:#424242}.grid{stroke:#e0e0e0}.month{stroke:#bdbdbd}
.phase{font-weight:600;font-size:13px}.phase-band{fill:#f5f5f5}
.bar{fill:#cfd8dc}.progress{fill:#90a4ae}.baseline{fill:none;stroke:#616161;stroke-dasharray:3 2}
.today{stroke:#6a1b9a;stroke-width:2;stroke-dasharray:6 3}.today-label{fill:#6a1b9a;font-weight:600}
.arrow{fill:none;stroke:#455a64;stroke-width:1.3}.achieved{fill:#fff;stroke:#1565c0;stroke-width:2}
.health-word{font-size:11px;font-weight:600}\
.row-link:focus rect.hit,.row-link:hover rect.hit{fill:#fff8e1}
.hit{fill:transparent}.diagonal{stroke:#616161;stroke-dasharray:4 4}\
.series{fill:none;stroke-width:2}
"""


# Characters XML 1.0 forbids (a downloaded SVG is an XML document): C0 controls but tab, line
# feed and carriage return, and lone surrogates. A log written before the intake bounded text may
# hold them in a name; they are shown as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def esc(value: object) -> str:
    """Text for an SVG element or attribute: escaped, and without what XML cannot hold."""
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def gantt_range(view: ProjectView) -> tuple[dt.date, dt.date]:
    others = []
    for r in view.rows:
        others += [
            r.start,
            r.end,
            r.expected_finish,
            *([r.baseline_due] if r.baseline_due else []),
            *([r.achieved_on] if r.achieved_on else []),
        ]
    dues = [r.due for r in view.rows]
    return padded(*chart_range(dues, view.judged_on, others), 3, 10)


def _diamond(cx: float, cy: float, r: float) -> str:
    return f"M{cx},{cy - r} L{cx + r},{cy} L{cx},{cy + r} L{cx - r},{cy} Z"


def gantt_svg(view: ProjectView, *, link: str | None = None) -> str:
    """Phases as rows of milestones: the tasks' span as a bar, the due date as a diamond in the
    health colour, the baseline as a hollow diamond, the achieved day as a circle, arrows from
    each predecessor's due date to its successor's bar, a line for today, and a legend."""
    start, end = gantt_range(view)
    scale = Scale(start, end, LABEL_W, CHART_W)
    ys: dict[str, float] = {}
    lines: list[str] = []
    y = TOP
    phase = object()
    for r in view.rows:
        if r.phase != phase:
            phase = r.phase
            lines.append(
                f'<g class="phase-row" data-phase="{esc(str(r.phase or ""))}">'
                f'<rect class="phase-band" x="0" y="{y}" width="{LABEL_W + CHART_W + 90}" '
                f'height="{ROW_H}"/>'
                f'<text class="phase" x="8" y="{y + 17}">{esc(r.phase or "No phase")}</text></g>'
            )
            y += ROW_H
        ys[r.milestone_id] = y + ROW_H / 2
        lines.append(_gantt_row(view, r, scale, y, link))
        y += ROW_H
    height = y + 70
    arrows = []
    by_id = {r.milestone_id: r for r in view.rows}
    for r in view.rows:
        for pred in sorted(r.predecessors):
            if pred not in by_id:
                continue
            p = by_id[pred]
            # finish-to-start: from the predecessor's due date (diamond) to the successor's diamond
            x1, y1 = scale.x(p.due) + 7, ys[pred]
            x2, y2 = scale.x(r.due) - 8, ys[r.milestone_id]
            elbow = x1 + 6
            d = f"M{x1},{y1} H{elbow} V{y2} H{x2}"
            arrows.append(
                f'<path class="arrow" data-from="{esc(pred)}" '
                f'data-to="{esc(r.milestone_id)}" '
                f'd="{d}" marker-end="url(#arrowhead)">'
                f"<title>{esc(pred)} → {esc(r.milestone_id)}"
                f" (finish-to-start, lag {r.predecessors[pred]} days)</title></path>"
            )
    axis = [
        f'<g class="axis"><line class="grid" x1="{LABEL_W}" y1="{TOP - 6}" '
        f'x2="{LABEL_W + CHART_W}" y2="{TOP - 6}"/>'
    ]
    for m in months(start, end, most=CHART_W // 55):
        x = scale.x(m)
        axis.append(
            f'<line class="month" x1="{x}" y1="{TOP - 10}" x2="{x}" y2="{y}"/>'
            f'<text x="{x + 3}" y="{TOP - 14}">{m.strftime("%b %Y")}</text>'
        )
    axis.append("</g>")
    tx = scale.x(view.judged_on)
    today = (
        f'<g class="today-mark" {scale.mark(view.judged_on)} data-x="{tx}">'
        f'<line class="today" x1="{tx}" y1="{TOP - 8}" x2="{tx}" y2="{y}"/>'
        f'<text class="today-label" x="{tx + 4}" y="{TOP - 28}">'
        f"{'as of' if view.as_of else 'today'} {scale.note(view.judged_on)}</text></g>"
    )
    title = f"Gantt chart of {view.name} ({view.project_id})"
    width = LABEL_W + CHART_W + 100
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="gantt" role="img" '
        'aria-labelledby="gantt-title" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'data-start="{start.isoformat()}" data-px-per-day="{scale.px}">'
        f'<title id="gantt-title">{esc(title)}</title><style>{STYLE}</style>'
        '<defs><marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#455a64"/></marker></defs>'
        + "".join(axis)
        + "".join(lines)
        + today
        + "".join(arrows)
        + _legend(y + 20)
        + "</svg>"
    )


def _gantt_row(view: ProjectView, r, scale: Scale, y: float, link: str | None) -> str:
    cy = y + ROW_H / 2
    colour = HEALTH_COLOURS.get(r.health, "#424242")
    word = HEALTH_WORDS.get(r.health, r.health)
    bx, bw = scale.x(r.start), max(2.0, scale.x(r.end) - scale.x(r.start))
    dx = scale.x(r.due)
    label = r.name if len(r.name) <= 34 else r.name[:33] + "…"
    tip = (
        f"{r.name} ({r.milestone_id}), {r.kind}: "
        f"due {scale.note(r.due)}, expected {scale.note(r.expected_finish)}, "
        f"{r.progress}% of {r.tasks_total} tasks done; {word}: " + "; ".join(r.reasons)
    )
    parts = [
        f'<rect class="hit" x="0" y="{y}" width="{LABEL_W + CHART_W + 90}" height="{ROW_H}"/>',
        f'<text class="label" x="16" y="{cy + 4}">{esc(label)}</text>',
        f'<rect class="bar" data-milestone="{esc(r.milestone_id)}" '
        f'data-start="{r.start.isoformat()}" '
        f'data-end="{r.end.isoformat()}" x="{bx}" y="{y + 8}" width="{round(bw, 1)}" '
        f'height="{ROW_H - 16}" rx="2"/>',
        f'<rect class="progress" x="{bx}" y="{y + 8}" width="{round(bw * r.progress / 100, 1)}" '
        f'height="{ROW_H - 16}" rx="2"/>',
    ]
    if r.baseline_due is not None:
        gx = scale.x(r.baseline_due)
        parts.append(
            f'<path class="baseline" data-milestone="{esc(r.milestone_id)}" '
            f'{scale.mark(r.baseline_due)} data-x="{gx}" d="{_diamond(gx, cy, 8)}">'
            f"<title>baseline {esc(view.baseline or '')}: "
            f"{scale.note(r.baseline_due)}</title></path>"
        )
    parts.append(
        f'<path class="diamond health-{r.health}" data-milestone="{esc(r.milestone_id)}" '
        f'{scale.mark(r.due)} data-x="{dx}" fill="{colour}" d="{_diamond(dx, cy, 7)}">'
        f"<title>due {scale.note(r.due)}</title></path>"
    )
    if r.achieved_on is not None:
        ax = scale.x(r.achieved_on)
        parts.append(
            f'<circle class="achieved" data-milestone="{esc(r.milestone_id)}" '
            f'{scale.mark(r.achieved_on)} data-x="{ax}" cx="{ax}" cy="{cy}" r="4">'
            f"<title>achieved {scale.note(r.achieved_on)}</title></circle>"
        )
    if r.expected_finish > r.due and r.health in ("late", "missed"):
        fx = scale.x(r.expected_finish)
        parts.append(
            f'<line class="forecast" data-milestone="{esc(r.milestone_id)}" '
            f'{scale.mark(r.expected_finish)} data-x="{fx}" '
            f'x1="{dx + 7}" y1="{cy}" x2="{fx}" y2="{cy}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="3 2">'
            f"<title>expected {scale.note(r.expected_finish)}</title></line>"
            f'<line x1="{fx}" y1="{cy - 5}" x2="{fx}" y2="{cy + 5}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
    wx = max(scale.x(r.end), dx) + 12
    if r.health in ("late", "missed") and r.expected_finish > r.due:  # after the whisker
        wx = max(wx, scale.x(r.expected_finish) + 12)
    parts.append(
        f'<text class="health-word" x="{wx}" y="{cy + 4}" fill="{colour}">{esc(word)}</text>'
    )
    body = "".join(parts)
    row = (
        f'<g class="milestone-row" data-milestone="{esc(r.milestone_id)}" '
        f'data-health="{r.health}">'
        f"<title>{esc(tip)}</title>{body}</g>"
    )
    if link:
        return (
            f'<a class="row-link" href="{esc(link)}/milestones/{esc(r.milestone_id)}" '
            f'aria-label="{esc(r.name)}: {esc(word)}">{row}</a>'
        )
    return row


def _legend(y: float) -> str:
    items, x = [], LABEL_W
    for health, colour in HEALTH_COLOURS.items():
        items.append(
            f'<path d="{_diamond(x + 6, y, 6)}" fill="{colour}"/>'
            f'<text x="{x + 16}" y="{y + 4}">{HEALTH_WORDS[health]}</text>'
        )
        x += 90
    y2 = y + 24
    items.append(
        f'<rect class="bar" x="{LABEL_W}" y="{y2 - 5}" width="26" height="10"/>'
        f'<text x="{LABEL_W + 32}" y="{y2 + 4}">tasks (darker: done)</text>'
        f'<path class="baseline" d="{_diamond(LABEL_W + 170, y2, 7)}"/>'
        f'<text x="{LABEL_W + 182}" y="{y2 + 4}">baseline</text>'
        f'<circle class="achieved" cx="{LABEL_W + 260}" cy="{y2}" r="4"/>'
        f'<text x="{LABEL_W + 270}" y="{y2 + 4}">achieved</text>'
        f'<path class="arrow" d="M{LABEL_W + 350},{y2} H{LABEL_W + 380}" '
        'marker-end="url(#arrowhead)"/>'
        f'<text x="{LABEL_W + 386}" y="{y2 + 4}">depends on (finish-to-start)</text>'
        f'<line x1="{LABEL_W + 590}" y1="{y2}" x2="{LABEL_W + 620}" y2="{y2}" '
        'stroke="#d84315" stroke-width="2" stroke-dasharray="3 2"/>'
        f'<text x="{LABEL_W + 626}" y="{y2 + 4}">late: expected finish</text>'
    )
    return f'<g class="legend" aria-label="legend">{"".join(items)}</g>'


def trend_svg(trend: Trend, *, title: str = "") -> str:
    """The milestone trend analysis: report date (x) against forecast (y), one line per milestone,
    and the diagonal where forecast = report date (a line that meets it has been reached)."""
    left, top, size = 110, 40, 620
    dates = list(trend.report_dates)
    forecasts = [p.forecast for s in trend.series for p in s.points]
    if not dates or not forecasts:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" class="trend" role="img" width="400" '
            'height="60">'
            '<text x="10" y="30">No report dates yet: plan a milestone first.</text></svg>'
        )
    # one date range on both axes, so the diagonal (forecast = report date) is at 45 degrees: the
    # triangle of a milestone trend analysis
    d_min, d_max = padded(*chart_range([*dates, *forecasts], dates[-1]), 3, 7)
    xs = Scale(d_min, d_max, left, size)

    def y(d: dt.date) -> float:  # the same scale upwards (clamped at the edges as well)
        return round(top + size - (xs.x(d) - left), 1)

    parts = [
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="#fafafa" '
        'stroke="#bdbdbd"/>'
    ]
    for m in months(d_min, d_max, most=size // 55):
        parts.append(
            f'<line class="grid" x1="{xs.x(m)}" y1="{top}" x2="{xs.x(m)}" y2="{top + size}"/>'
            f'<text class="tick" x="{xs.x(m)}" y="{top + size + 16}" '
            f'text-anchor="middle">{m.strftime("%b %Y")}</text>'
            f'<line class="grid" x1="{left}" y1="{y(m)}" x2="{left + size}" y2="{y(m)}"/>'
            f'<text class="tick" x="{left - 6}" y="{y(m) + 4}" '
            f'text-anchor="end">{m.strftime("%b %Y")}</text>'
        )
    parts.append(
        f'<path d="M{left},{top + size} L{left + size},{top} L{left},{top} Z" fill="#fff"/>'
        f'<line class="diagonal" data-from="{d_min.isoformat()}" data-to="{d_max.isoformat()}" '
        f'x1="{xs.x(d_min)}" y1="{y(d_min)}" x2="{xs.x(d_max)}" y2="{y(d_max)}">'
        "<title>forecast = report date: "
        "a line that meets it has been reached</title></line>"
    )
    labels: list[tuple[float, float, str, str]] = []
    for n, s in enumerate(trend.series):
        colour, dash = (
            SERIES_COLOURS[n % len(SERIES_COLOURS)],
            DASHES[(n // len(SERIES_COLOURS)) % len(DASHES)],
        )
        points = [(p.report_date, p.forecast) for p in s.points]
        if s.achieved_on is not None:  # the line ends where it meets the diagonal
            points = [pt for pt in points if pt[0] < s.achieved_on] + [
                (s.achieved_on, s.achieved_on)
            ]
        pts = " ".join(f"{xs.x(a)},{y(b)}" for a, b in points)
        last = points[-1]
        state = (
            f"achieved {xs.note(s.achieved_on)}"
            if s.achieved_on
            else f"forecast {xs.note(last[1])}"
        )
        parts.append(
            f'<g class="series-group" data-milestone="{esc(s.milestone_id)}">'
            f"<title>{esc(s.name)}: {state}</title>"
            f'<polyline class="series" data-milestone="{esc(s.milestone_id)}" points="{pts}" '
            f'stroke="{colour}"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + "/>"
            + "".join(
                f'<circle class="point" data-date="{a.isoformat()}" '
                f'data-forecast="{b.isoformat()}"'
                + (' data-clamped="true"' if xs.clamped(a) or xs.clamped(b) else "")
                + f' cx="{xs.x(a)}" cy="{y(b)}" r="2.5" fill="{colour}">'
                f"<title>{a.isoformat()}: {esc(s.name)} forecast {xs.note(b)}</title></circle>"
                for a, b in points
            )
            + "</g>"
        )
        labels.append(
            (y(last[1]), xs.x(last[0]), colour, s.name[:28] + (" ✓" if s.achieved_on else ""))
        )
    placed: list[float] = []
    for ly, lx, colour, text in sorted(labels):  # labels pushed apart so they never overlap
        ly = max(ly, placed[-1] + 13) if placed else ly
        placed.append(ly)
        parts.append(
            f'<text class="series-label" x="{lx + 6}" y="{ly + 4}" '
            f'fill="{colour}">{esc(text)}</text>'
        )
    parts.append(
        f'<text x="{left + size / 2}" y="{top + size + 40}" text-anchor="middle">report date</text>'
        f'<text transform="translate(22,{top + size / 2}) rotate(-90)" '
        'text-anchor="middle">forecast date</text>'
    )
    width, height = left + size + 220, top + size + 60
    label = title or f"Milestone trend analysis of {trend.project_id}"
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="trend" role="img" '
        'aria-labelledby="trend-title" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title id="trend-title">'
        f"{esc(label)}</title><style>{STYLE}</style>{''.join(parts)}</svg>"
    )
