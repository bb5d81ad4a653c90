"""Where a chart's words go (pure): text widths estimated from the characters, boxes, and a
simple collision-avoiding placement, so that no label covers another label or a line.

The server lays a chart out without a browser, so widths are estimates: per-character advances
of DejaVu Sans (the usual sans-serif of a Linux desktop and of CI), rounded up, which is wider
than most other sans-serif fonts. Erring wide only leaves a little more room.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

# Advance widths in ems, rounded up (DejaVu Sans Book); bold adds ~10 %.
_NARROW = set("ijlI.,:;'!|()[]{} `")
_SEMI = set('frt-/\\"*')
_WIDE = set("mwMW@%✓…—")
_CAPS = set("ABCDEFGHJKLNOPQRSTUVXYZ&#")
LINE_HEIGHT = 1.25  # a text box's height in ems (ascent + descent)


def text_width(text: str, size: float, bold: bool = False) -> float:
    ems = 0.0
    for ch in text:
        if ch in _NARROW:
            ems += 0.34
        elif ch in _SEMI:
            ems += 0.45
        elif ch in _WIDE:
            ems += 1.0
        elif ch in _CAPS:
            ems += 0.78
        else:
            ems += 0.66
    return round(ems * size * (1.1 if bold else 1.0), 1)


def fit(text: str, size: float, width: float, bold: bool = False) -> str:
    """``text``, shortened with an ellipsis until it is at most ``width`` wide."""
    if text_width(text, size, bold) <= width:
        return text
    while text and text_width(text + "…", size, bold) > width:
        text = text[:-1]
    return text.rstrip() + "…"


class Box(NamedTuple):
    x0: float
    y0: float
    x1: float
    y1: float

    def hits(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )


def text_box(x: float, baseline: float, text: str, size: float, *, bold: bool = False) -> Box:
    """The box of a text drawn with ``text-anchor`` start at (x, baseline)."""
    return Box(x, baseline - size, x + text_width(text, size, bold), baseline + 0.3 * size)


def segment_box(x1: float, y1: float, x2: float, y2: float, pad: float = 1.5) -> Box:
    """A line segment (horizontal or vertical, as the charts draw them) as a thin box."""
    return Box(min(x1, x2) - pad, min(y1, y2) - pad, max(x1, x2) + pad, max(y1, y2) + pad)


def path_boxes(points: list[tuple[float, float]], pad: float = 1.5) -> list[Box]:
    """The boxes of a polyline's segments (only right for horizontal and vertical ones)."""
    return [segment_box(*a, *b, pad=pad) for a, b in zip(points, points[1:], strict=False)]


def place_beside(
    width: float,
    y0: float,
    y1: float,
    *,
    right_of: float,
    left_of: float,
    lo: float,
    hi: float,
    obstacles: Iterable[Box],
    gap: float = 4,
) -> float | None:
    """The left x of a ``width``-wide label spanning ``y0``..``y1``: the first place right of
    ``right_of`` (stepping past every obstacle it would cover) within ``hi``, else the first place
    left of ``left_of`` within ``lo``; ``None`` when neither side has room."""
    near = [b for b in obstacles if b.y0 < y1 and y0 < b.y1]
    x = right_of + gap
    while x + width <= hi:
        hit = [b for b in near if b.hits(Box(x, y0, x + width, y1))]
        if not hit:
            return x
        x = max(b.x1 for b in hit) + gap
    end = left_of - gap
    while end - width >= lo:
        hit = [b for b in near if b.hits(Box(end - width, y0, end, y1))]
        if not hit:
            return end - width
        end = min(b.x0 for b in hit) - gap
    return None


def spread(wanted: list[float], step: float, lo: float, hi: float) -> list[float]:
    """Baselines for labels that want to sit at ``wanted`` (sorted), at least ``step`` apart and
    within [lo, hi] when they fit there: each pushed down past the one above it, then the whole
    run pushed back up from ``hi``."""
    out: list[float] = []
    for w in wanted:
        out.append(max(w, lo, out[-1] + step) if out else max(w, lo))
    for n in range(len(out) - 1, -1, -1):
        limit = hi if n == len(out) - 1 else out[n + 1] - step
        out[n] = min(out[n], limit)
    return [max(y, lo + n * step) for n, y in enumerate(out)]
