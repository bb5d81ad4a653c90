"""The Gantt chart as SVG (pure, deterministic); the trend chart is in ``trend``.

Every mark carries ``class`` and ``data-*`` attributes (milestone id, date, x) so that tests
and people's own tools can read the chart, and a ``<title>`` so hovering says what it is.
Colour is never the only signal: each milestone carries its health as a word, and marks
differ in shape (bar: tasks' span, filled diamond: due date, or the achievement date once
achieved, hollow dashed diamond: baseline).

The chart is drawn in a ``WIDTH``-wide coordinate system and scales to its container (the page
gives it ``width: 100%``), so it fits any window from 1,024 px up with the whole range in view.
Words are placed after the lines: a health word goes beside its milestone's marks where no
dependency arrow, today line or other word passes (``labels.place_beside``).
"""

from __future__ import annotations

import datetime as dt

from services.dashboard.labels import (
    Box,
    fit,
    path_boxes,
    place_beside,
    segment_box,
    text_box,
    text_width,
)
from services.dashboard.marks import (
    HEALTH_COLOURS,
    HEALTH_WORDS,
    SERIES_COLOURS,
    STYLE,
    diamond,
    esc,
)
from services.dashboard.model import ProjectView, Row
from services.dashboard.scale import Scale, chart_range, months, padded
from services.dashboard.trend import trend_svg

__all__ = ["HEALTH_COLOURS", "HEALTH_WORDS", "SERIES_COLOURS", "gantt_svg", "trend_svg"]

WIDTH = 1000  # the coordinate system's width; the page scales it to the window
LABEL_W = 230  # milestone names, left of the time axis
CHART_W = 680  # the time axis; right of it, room for the last health word
ROW_H = 26
TOP = 58
WORD_SIZE = 11  # health words: bold
CRITICAL = ' data-critical="true"'  # a milestone on the critical chain, and its arrows


def gantt_range(view: ProjectView) -> tuple[dt.date, dt.date]:
    others = []
    for r in view.rows:
        others += [
            r.start,
            r.end,
            r.expected_finish,
            *([r.baseline_due] if r.baseline_due else []),
            *([r.achieved_on] if r.achieved_on else []),
            *_outlook_dates(r),
        ]
    dues = [r.due for r in view.rows]
    return padded(*chart_range(dues, view.judged_on, others), 3, 10)


def _outlook_dates(r: Row) -> list[dt.date]:
    """The dates an open milestone's forecast and float marks reach."""
    if r.achieved_on is not None:
        return []
    found = [r.forecast, r.forecast_low, r.forecast_high, r.late_finish]
    return [d for d in found if d is not None]


def finish(r: Row) -> dt.date:
    """Where a milestone's one mark is: its achievement once achieved, else its due date."""
    return r.achieved_on or r.due


def gantt_svg(view: ProjectView, *, link: str | None = None) -> str:
    """Phases as rows of milestones: the tasks' span as a bar, one diamond in the health colour
    (at the due date, or at the achievement date once achieved), the baseline as a hollow
    diamond, arrows from each predecessor's diamond to its successor's, a line for today, the
    health in words beside each row, and a legend."""
    start, end = gantt_range(view)
    scale = Scale(start, end, LABEL_W, CHART_W)
    centre, phases, bottom = _rows(view)
    marks = {r.milestone_id: _marks(view, r, scale, centre[r.milestone_id]) for r in view.rows}
    arrows, obstacles = _arrows(view, scale, centre)
    tx = scale.x(view.judged_on)
    obstacles.append(segment_box(tx, TOP - 8, tx, bottom))
    words = _health_words(view, marks, centre, obstacles)
    rows = [
        _row(view, r, marks[r.milestone_id][0], words[r.milestone_id], centre[r.milestone_id], link)
        for r in view.rows
    ]
    title = f"Gantt chart of {view.name} ({view.project_id})"
    legend, legend_bottom = _legend(bottom + 26)
    height = legend_bottom + 12
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="gantt" role="img" '
        'aria-labelledby="gantt-title" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'data-start="{start.isoformat()}" data-px-per-day="{scale.px}">'
        f'<title id="gantt-title">{esc(title)}</title><style>{STYLE}</style>'
        '<defs><marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" '
        'orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#455a64"/></marker>'
        '<marker id="arrowhead-critical" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#b71c1c"/></marker>'
        "</defs>"
        + _axis(view, scale, bottom)
        + "".join(phases)
        + "".join(rows)
        + _today(view, scale, bottom)
        + "".join(arrows)
        + legend
        + "</svg>"
    )


def _rows(view: ProjectView) -> tuple[dict[str, float], list[str], float]:
    """Each milestone's row centre, the phase bands, and the y below the last row."""
    centre: dict[str, float] = {}
    bands: list[str] = []
    y: float = TOP
    phase: object = object()
    for r in view.rows:
        if r.phase != phase:
            phase = r.phase
            name = fit(r.phase or "No phase", 13, LABEL_W - 16, bold=True)
            bands.append(
                f'<g class="phase-row" data-phase="{esc(str(r.phase or ""))}">'
                f'<rect class="phase-band" x="0" y="{y}" width="{WIDTH}" height="{ROW_H}"/>'
                f'<text class="phase" x="8" y="{y + 17}">{esc(name)}</text></g>'
            )
            y += ROW_H
        centre[r.milestone_id] = y + ROW_H / 2
        y += ROW_H
    return centre, bands, y


def _axis(view: ProjectView, scale: Scale, bottom: float) -> str:
    out = [
        f'<g class="axis"><line class="grid" x1="{LABEL_W}" y1="{TOP - 6}" '
        f'x2="{LABEL_W + CHART_W}" y2="{TOP - 6}"/>'
    ]
    for m in months(scale.start, scale.end, most=CHART_W // 70):
        x = scale.x(m)
        out.append(
            f'<line class="month" x1="{x}" y1="{TOP - 10}" x2="{x}" y2="{bottom}"/>'
            f'<text x="{x + 3}" y="{TOP - 14}">{m.strftime("%b %Y")}</text>'
        )
    return "".join(out) + "</g>"


def _today(view: ProjectView, scale: Scale, bottom: float) -> str:
    tx = scale.x(view.judged_on)
    words = f"{'as of' if view.as_of else 'today'} {scale.note(view.judged_on)}"
    width = text_width(words, 12, bold=True)
    lx = tx + 4 if tx + 4 + width <= WIDTH - 4 else max(4, tx - 4 - width)
    return (
        f'<g class="today-mark" {scale.mark(view.judged_on)} data-x="{tx}">'
        f'<line class="today" x1="{tx}" y1="{TOP - 8}" x2="{tx}" y2="{bottom}"/>'
        f'<text class="today-label" x="{round(lx, 1)}" y="{TOP - 32}">{esc(words)}</text></g>'
    )


def _marks(view: ProjectView, r: Row, scale: Scale, cy: float) -> tuple[str, float, float]:
    """A row's bar and diamonds, and the x range they cover."""
    y = cy - ROW_H / 2
    colour = HEALTH_COLOURS.get(r.health, "#424242")
    bx, bw = scale.x(r.start), max(2.0, scale.x(r.end) - scale.x(r.start))
    mid = esc(r.milestone_id)
    parts = [
        f'<rect class="bar" data-milestone="{mid}" data-start="{r.start.isoformat()}" '
        f'data-end="{r.end.isoformat()}" x="{bx}" y="{y + 8}" width="{round(bw, 1)}" '
        f'height="{ROW_H - 16}" rx="2"/>',
        f'<rect class="progress" x="{bx}" y="{y + 8}" width="{round(bw * r.progress / 100, 1)}" '
        f'height="{ROW_H - 16}" rx="2"/>',
    ]
    fx = scale.x(finish(r))
    lo, hi = min(bx, fx - 8), max(bx + bw, fx + 8)
    if r.baseline_due is not None:
        gx = scale.x(r.baseline_due)
        lo, hi = min(lo, gx - 9), max(hi, gx + 9)
        parts.append(
            f'<path class="baseline" data-milestone="{mid}" '
            f'{scale.mark(r.baseline_due)} data-x="{gx}" d="{diamond(gx, cy, 8)}">'
            f"<title>baseline {esc(view.baseline or '')}: "
            f"{scale.note(r.baseline_due)}</title></path>"
        )
    if r.achieved_on is not None:  # one mark: the achievement (its due date is in the title)
        parts.append(
            f'<path class="diamond achieved health-{r.health}" data-milestone="{mid}" '
            f'{scale.mark(r.achieved_on)} data-x="{fx}" fill="{HEALTH_COLOURS["achieved"]}" '
            f'd="{diamond(fx, cy, 7)}"><title>achieved {scale.note(r.achieved_on)} '
            f"(due {scale.note(r.due)})</title></path>"
        )
    else:
        parts.append(
            f'<path class="diamond health-{r.health}" data-milestone="{mid}" '
            f'{scale.mark(r.due)} data-x="{fx}" fill="{colour}" d="{diamond(fx, cy, 7)}">'
            f"<title>due {scale.note(r.due)}</title></path>"
        )
    if r.sign_off is not None:  # a decision gate: a ring around its mark, by sign-off state
        lo, hi = min(lo, fx - 11), max(hi, fx + 11)
        parts.append(gate_mark(r.sign_off, mid, fx, cy))
    outlook, lo, hi = _outlook(r, scale, cy, fx, lo, hi)
    parts.append(outlook)
    if r.achieved_on is None and r.expected_finish > r.due and r.health in ("late", "missed"):
        ex = scale.x(r.expected_finish)
        hi = max(hi, ex + 2)
        parts.append(
            f'<line class="expected-finish" data-milestone="{mid}" '
            f'{scale.mark(r.expected_finish)} data-x="{ex}" '
            f'x1="{fx + 7}" y1="{cy}" x2="{ex}" y2="{cy}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="3 2">'
            f"<title>expected {scale.note(r.expected_finish)}</title></line>"
            f'<line class="expected-finish-end" x1="{ex}" y1="{cy - 5}" x2="{ex}" y2="{cy + 5}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
    return "".join(parts), lo, hi


def _outlook(
    r: Row, scale: Scale, cy: float, fx: float, lo: float, hi: float
) -> tuple[str, float, float]:
    """An open milestone's float as a thin bar under its diamond (from the day it can finish to
    the last day it may without moving the project's finish; red, the other way round, when the
    float is negative), and its forecast as a hollow circle with the range as a whisker."""
    if r.achieved_on is not None:
        return "", lo, hi
    mid = esc(r.milestone_id)
    parts = []
    if r.late_finish is not None and r.float_days is not None:
        early = dt.date.fromordinal(max(1, r.late_finish.toordinal() - r.float_days))
        x0, x1 = sorted((scale.x(early), scale.x(r.late_finish)))
        kind = "float negative" if r.float_days < 0 else "float"
        lo, hi = min(lo, x0), max(hi, x1)
        parts.append(
            f'<rect class="{kind}" data-milestone="{mid}" data-float="{r.float_days}" '
            f'data-late-finish="{r.late_finish.isoformat()}" x="{x0}" y="{cy + 9}" '
            f'width="{round(max(1.5, x1 - x0), 1)}" height="3">'
            f"<title>float {r.float_days} days: may finish by {scale.note(r.late_finish)} "
            "without moving the project's finish</title></rect>"
        )
    if r.forecast is not None:
        cx = scale.x(r.forecast)
        low = scale.x(r.forecast_low) if r.forecast_low is not None else cx
        high = scale.x(r.forecast_high) if r.forecast_high is not None else scale.x(scale.end)
        lo, hi = min(lo, low, cx - 5), max(hi, high, cx + 5)
        parts.append(
            f'<g class="forecast" data-milestone="{mid}" {scale.mark(r.forecast)} data-x="{cx}">'
            f'<line x1="{low}" y1="{cy - 9}" x2="{high}" y2="{cy - 9}"/>'
            f'<circle cx="{cx}" cy="{cy - 9}" r="3.5"/>'
            f"<title>forecast {scale.note(r.forecast)} from the pace of work"
            + (
                f" (range {scale.note(r.forecast_low)} to "
                f"{scale.note(r.forecast_high) if r.forecast_high else 'open'})"
                if r.forecast_low is not None
                else ""
            )
            + "</title></g>"
        )
    return "".join(parts), lo, hi


def _arrows(
    view: ProjectView, scale: Scale, centre: dict[str, float]
) -> tuple[list[str], list[Box]]:
    """Finish-to-start arrows from each predecessor's diamond (its achievement once achieved)
    to its successor's, and the boxes of their segments (words keep clear of them)."""
    by_id = {r.milestone_id: r for r in view.rows}
    out: list[str] = []
    boxes: list[Box] = []
    for r in view.rows:
        for pred in sorted(r.predecessors):
            if pred not in by_id:
                continue
            points = _route(
                scale.x(finish(by_id[pred])),
                centre[pred],
                scale.x(finish(r)),
                centre[r.milestone_id],
            )
            boxes += path_boxes(points, pad=2)
            d = "M" + " L".join(f"{x},{y}" for x, y in points)
            on_chain = r.critical and by_id[pred].critical
            out.append(
                f'<path class="arrow"{CRITICAL if on_chain else ""} '
                f'data-from="{esc(pred)}" data-to="{esc(r.milestone_id)}" '
                f'd="{d}" marker-end="url(#arrowhead{"-critical" if on_chain else ""})">'
                f"<title>{esc(pred)} → {esc(r.milestone_id)}"
                f" (finish-to-start, lag {r.predecessors[pred]} days)</title></path>"
            )
    return out, boxes


def _route(px: float, py: float, sx: float, sy: float) -> list[tuple[float, float]]:
    """Right out of the predecessor's diamond at (px, py), down (or up) beside it, into the
    successor's diamond at (sx, sy): from its left, from above or below when it is just right of
    the bend, from its right when it is left of it."""
    x1 = round(px + 7, 1)
    bend = round(x1 + 6, 1)
    if sx - 8 >= bend + 2:
        return [(x1, py), (bend, py), (bend, sy), (round(sx - 8, 1), sy)]
    if sx > px + 1:
        tip = sy - 7 if sy > py else sy + 7
        return [(x1, py), (sx, py), (sx, tip)]
    return [(x1, py), (bend, py), (bend, sy), (round(sx + 8, 1), sy)]


def _health_words(
    view: ProjectView,
    marks: dict[str, tuple[str, float, float]],
    centre: dict[str, float],
    obstacles: list[Box],
) -> dict[str, float]:
    """The x of each row's health word: beside its marks, clear of arrows, the today line and
    the other words."""
    placed: list[Box] = []
    out = {}
    for r in view.rows:
        _, lo, hi = marks[r.milestone_id]
        word = HEALTH_WORDS.get(r.health, r.health)
        cy = centre[r.milestone_id]
        box = text_box(0, cy + 4, word, WORD_SIZE, bold=True)
        x = place_beside(
            box.x1,
            box.y0,
            box.y1,
            right_of=hi,
            left_of=lo,
            lo=LABEL_W,
            hi=WIDTH - 4,
            obstacles=[*obstacles, *placed],
        )
        x = round(hi + 4 if x is None else x, 1)
        placed.append(Box(x, box.y0, x + box.x1, box.y1))
        out[r.milestone_id] = x
    return out


def _row(view: ProjectView, r: Row, marks: str, wx: float, cy: float, link: str | None) -> str:
    y = cy - ROW_H / 2
    colour = HEALTH_COLOURS.get(r.health, "#424242")
    word = HEALTH_WORDS.get(r.health, r.health)
    label = fit(r.name, 12, LABEL_W - 16 - 10)
    tip = (
        f"{r.name} ({r.milestone_id}), {r.kind}: due {r.due.isoformat()}, "
        + (f"achieved {r.achieved_on.isoformat()}, " if r.achieved_on else "")
        + f"expected {r.expected_finish.isoformat()}, "
        + (f"forecast {r.forecast.isoformat()}, " if r.forecast else "")
        + (
            f"float {r.float_days} days{' (critical)' if r.critical else ''}, "
            if r.float_days is not None
            else ""
        )
        + f"{r.progress}% of {r.tasks_total} tasks done; {word}: "
        + "; ".join(r.reasons)
    )
    body = (
        f'<rect class="hit" x="0" y="{y}" width="{WIDTH}" height="{ROW_H}"/>'
        f'<text class="label" x="16" y="{cy + 4}">{esc(label)}</text>'
        + marks
        + f'<text class="health-word" x="{wx}" y="{cy + 4}" fill="{colour}">{esc(word)}</text>'
    )
    critical = CRITICAL if r.critical else ""
    row = (
        f'<g class="milestone-row"{critical} data-milestone="{esc(r.milestone_id)}" '
        f'data-health="{r.health}" data-float="{"" if r.float_days is None else r.float_days}">'
        f"<title>{esc(tip)}</title>{body}</g>"
    )
    if link:
        return (
            f'<a class="row-link" href="{esc(link)}/milestones/{esc(r.milestone_id)}" '
            f'aria-label="{esc(r.name)}: {esc(word)}">{row}</a>'
        )
    return row


def gate_mark(sign_off: dict, mid: str, cx: float, cy: float) -> str:
    """A decision gate's own mark: a ring, solid once approved, dashed while it waits (and red
    after a rejection), titled with its sign-off."""
    state = sign_off["state"]
    given = ", ".join(sign_off["approved_by"])
    words = {
        "not_requested": "sign-off not requested yet (tasks open)",
        "awaiting": "awaiting approval",
        "rejected": "rejected, awaiting approval again",
        "approved": "approved",
    }.get(state, state)
    title = (
        f"decision gate: {words} ({len(sign_off['approved_by'])} of {sign_off['needed']}"
        + (f": {given}" if given else "")
        + f"); approvers {', '.join(sign_off['approvers'])}"
    )
    return (
        f'<circle class="gate {esc(state)}" data-milestone="{mid}" data-sign-off="{esc(state)}" '
        f'cx="{cx}" cy="{cy}" r="10"><title>{esc(title)}</title></circle>'
    )


def _legend(y: float) -> tuple[str, float]:
    """The legend, item after item, wrapping at the chart's width; and the y below it."""
    items: list[tuple[float, str, str]] = [
        (14, f'<path d="{diamond(7, 0, 6)}" fill="{colour}"/>', HEALTH_WORDS[health])
        for health, colour in HEALTH_COLOURS.items()
    ]
    items += [
        (26, '<rect class="bar" x="0" y="-5" width="26" height="10"/>', "tasks (darker: done)"),
        (16, f'<path class="baseline" d="{diamond(8, 0, 7)}"/>', "baseline"),
        (
            30,
            '<path class="arrow" d="M0,0 H30" marker-end="url(#arrowhead)"/>',
            "depends on (finish-to-start)",
        ),
        (
            30,
            '<line x1="0" y1="0" x2="30" y2="0" stroke="#d84315" stroke-width="2" '
            'stroke-dasharray="3 2"/>',
            "late: expected finish",
        ),
        (
            30,
            '<path class="arrow" data-critical="true" d="M0,0 H30" '
            'marker-end="url(#arrowhead-critical)"/>',
            "critical chain",
        ),
        (26, '<rect class="float" x="0" y="-1.5" width="26" height="3"/>', "float"),
        (22, '<circle class="gate awaiting" cx="11" cy="0" r="9"/>', "decision gate (sign-off)"),
        (
            26,
            '<g class="forecast"><line x1="0" y1="0" x2="26" y2="0"/>'
            '<circle cx="13" cy="0" r="3.5"/></g>',
            "forecast and range",
        ),
    ]
    out, x = [], 16.0
    for width, swatch, words in items:
        room = width + 6 + text_width(words, 12)
        if x + room > WIDTH - 16:
            x, y = 16.0, y + 22
        out.append(
            f'<g transform="translate({x},{y})">{swatch}</g>'
            f'<text x="{round(x + width + 6, 1)}" y="{y + 4}">{esc(words)}</text>'
        )
        x += room + 18
    return f'<g class="legend" aria-label="legend">{"".join(out)}</g>', y + 10
