"""What both charts draw with (pure): colours, words, marker shapes, the SVG stylesheet and
escaping."""

from __future__ import annotations

import re
from html import escape

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
# Okabe & Ito's palette for colour-blind readers (yellow left out: too pale on white), and a
# marker shape and a dash pattern per series, so that no two lines differ by colour alone.
SERIES_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
MARKERS = ("circle", "square", "triangle", "diamond", "down", "cross", "plus")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2")

FONT = "system-ui,-apple-system,Segoe UI,Roboto,sans-serif"
STYLE = (
    f"text{{font-family:{FONT};font-size:12px;fill:#212121}}"
    # a white halo keeps a word readable where a grid line passes behind it
    "text.label,text.health-word,text.series-label,text.today-label,.axis text,text.tick"
    "{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}"
    """
.axis text,text.tick{font-size:11px;fill:#424242}.grid{stroke:#e0e0e0}.month{stroke:#bdbdbd}
.phase{font-weight:600;font-size:13px}.phase-band{fill:#f5f5f5}
.bar{fill:#cfd8dc}.progress{fill:#90a4ae}.baseline{fill:none;stroke:#616161;stroke-dasharray:3 2}
.today{stroke:#6a1b9a;stroke-width:2;stroke-dasharray:6 3}.today-label{fill:#6a1b9a;font-weight:600}
.arrow{fill:none;stroke:#455a64;stroke-width:1.3}.arrow[data-critical]{stroke:#b71c1c;stroke-width:2.2}
[data-critical] text.label{font-weight:700;fill:#b71c1c}
.float{fill:#78909c}.float.negative{fill:#c62828}
.forecast line{stroke:#1565c0;stroke-width:1.2}
.forecast circle{fill:#fff;stroke:#1565c0;stroke-width:1.5}
.gate{fill:none;stroke:#b26a00;stroke-width:1.6;stroke-dasharray:3 2}
.gate.approved{stroke:#1565c0;stroke-dasharray:none}.gate.rejected{stroke:#b71c1c}
.gate.not_requested{stroke:#757575}
.health-word{font-size:11px;font-weight:600}\
.row-link:focus rect.hit,.row-link:hover rect.hit{fill:#fff8e1}
.hit{fill:transparent}.diagonal{stroke:#616161;stroke-dasharray:4 4}\
.series{fill:none;stroke-width:2}.leader{stroke:#9e9e9e;stroke-width:1}
"""
)

# Characters XML 1.0 forbids (a downloaded SVG is an XML document): C0 controls but tab, line
# feed and carriage return, and lone surrogates. A log written before the intake bounded text may
# hold them in a name; they are shown as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def esc(value: object) -> str:
    """Text for an SVG element or attribute: escaped, and without what XML cannot hold."""
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def diamond(cx: float, cy: float, r: float) -> str:
    return f"M{cx},{cy - r} L{cx + r},{cy} L{cx},{cy + r} L{cx - r},{cy} Z"


def marker(
    shape: str,
    cx: float,
    cy: float,
    colour: str,
    attrs: str = "",
    inner: str = "",
    cls: str = "point",
) -> str:
    """A point of a series drawn as ``shape`` (one of ``MARKERS``), with ``attrs`` and child
    elements (a ``<title>``)."""
    r = 3.5
    common = f'class="{cls}" {attrs} fill="{colour}" stroke="{colour}"'
    if shape == "circle":
        return f'<circle {common} cx="{cx}" cy="{cy}" r="{r}">{inner}</circle>'
    if shape == "square":
        return (
            f'<rect {common} x="{round(cx - r, 1)}" y="{round(cy - r, 1)}" '
            f'width="{2 * r}" height="{2 * r}">{inner}</rect>'
        )
    paths = {
        "triangle": f"M{cx},{cy - 4.5} L{cx + 4.5},{cy + 3.5} L{cx - 4.5},{cy + 3.5} Z",
        "down": f"M{cx},{cy + 4.5} L{cx + 4.5},{cy - 3.5} L{cx - 4.5},{cy - 3.5} Z",
        "diamond": diamond(cx, cy, 4.5),
        "cross": f"M{cx - r},{cy - r} L{cx + r},{cy + r} M{cx - r},{cy + r} L{cx + r},{cy - r}",
        "plus": f"M{cx - 4.5},{cy} H{cx + 4.5} M{cx},{cy - 4.5} V{cy + 4.5}",
    }
    width = ' stroke-width="2"' if shape in ("cross", "plus") else ""
    return f'<path {common}{width} d="{paths[shape]}">{inner}</path>'
