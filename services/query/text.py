"""Answers as text for a terminal: a table of chosen columns, or a query's own rendering where a
table does not say it (the report, the trend, the digest). The CLI prints these.

Tables are ``rich`` tables rendered to text at the width of the terminal (``TERMINAL``, set by
the CLI: the terminal's width, else ``COLUMNS``, else 100): columns wrap to fit it, and colour is
used only when the CLI writes to a terminal (never under ``NO_COLOR``)."""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

from services.notify.digest import render as render_digest

Cell = Callable[[dict[str, Any]], object]


@dataclass(frozen=True)
class Terminal:
    width: int = 100
    color: bool = False


PLAIN = Terminal()  # piped: 100 columns, no colour
TERMINAL: ContextVar[Terminal] = ContextVar("TERMINAL", default=PLAIN)


def rendered(renderable: RenderableType) -> str:
    """``renderable`` as text for ``TERMINAL``: ANSI colour only when it is a colour terminal,
    no line longer than its width, no trailing spaces."""
    terminal = TERMINAL.get()
    console = Console(
        file=io.StringIO(),
        width=terminal.width,
        force_terminal=terminal.color,
        no_color=not terminal.color,
        color_system="standard" if terminal.color else None,
        highlight=False,
        emoji=False,
        markup=False,
    )
    with console.capture() as captured:
        console.print(renderable, crop=True)
    return "\n".join(line.rstrip() for line in captured.get().rstrip("\n").splitlines())


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], cells: Mapping[str, Cell] | None = None
) -> str:
    """Columns under upper-case headers; ``cells`` computes a column from a row. Long cells wrap
    so that the table fits the terminal; when even the words of the columns cannot fit, the
    last columns are left out, and a line under the table says which."""
    cells = cells or {}
    shown = [[cell(cells[c](r) if c in cells else r.get(c)) for c in columns] for r in rows]
    kept = fitting(columns, shown)
    if kept < len(columns):
        shown = [row[:kept] for row in shown]
    grid = Table(
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        header_style="bold" if TERMINAL.get().color else "",
        collapse_padding=True,
    )
    for name, width in zip(columns[:kept], widths(columns[:kept], shown), strict=True):
        grid.add_column(name.upper(), overflow="fold", width=width)
    for row in shown:
        grid.add_row(*row)
    text = rendered(grid)
    if kept < len(columns):
        text += f"\n(left out to fit {TERMINAL.get().width} columns: {', '.join(columns[kept:])};"
        text += " --json has everything)"
    return text


def words(columns: Sequence[str], shown: list[list[str]]) -> list[int]:
    """Each column's header or longest word, whichever is longer."""
    return [
        max([len(name), *(len(w) for row in shown for w in row[i].split())])
        for i, name in enumerate(columns)
    ]


def fitting(columns: Sequence[str], shown: list[list[str]]) -> int:
    """How many columns (from the left, at least two) fit without breaking a word."""
    least = words(columns, shown)
    width = TERMINAL.get().width
    kept = len(columns)
    while kept > 2 and sum(least[:kept]) + kept - 1 > width:
        kept -= 1
    return kept


def widths(columns: Sequence[str], shown: list[list[str]]) -> list[int]:
    """Each column's width: all it wants when the table fits the terminal; else at least its
    header and its longest word (capped so that these fit), and the room left to the columns
    that want the most."""
    wants = [max([len(name), *(len(row[i]) for row in shown)]) for i, name in enumerate(columns)]
    room = TERMINAL.get().width - (len(columns) - 1)  # one space between columns
    if sum(wants) <= room:
        return wants
    least = words(columns, shown)
    cap = max(least, default=1)
    while cap > 1 and sum(min(w, cap) for w in least) > room:
        cap -= 1
    given = [min(w, cap) for w in least]
    for _ in range(max(room - sum(given), 0)):  # one character at a time, to the most wanting
        i = max(range(len(given)), key=lambda i: wants[i] - given[i])
        if wants[i] <= given[i]:
            break
        given[i] += 1
    return given


RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?(Z|\+00:00)$")


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    text = str(value)
    if moment := RFC3339.match(text):  # a UTC time, to the minute: --json has it exactly
        return f"{moment[1]} {moment[2]}"
    return text if len(text) <= 200 else text[:197] + "..."


# -- cells computed from a row -------------------------------------------------------------------
def last_response(delivery: dict[str, Any]) -> object:
    return delivery["last_status"] or delivery["last_error"]


def health_counts(project: dict[str, Any]) -> str:
    return ", ".join(f"{n} {h}" for h, n in project["by_health"].items())


def next_milestone(project: dict[str, Any]) -> str | None:
    upcoming = project["next_milestone"]
    return upcoming and f"{upcoming['milestone_id']} {upcoming['due']}"


def lag(projection: dict[str, Any]) -> object:
    return projection["pending"]


def rate(projection: dict[str, Any]) -> str:
    return f"{projection['rate']:.0f}/s"


# -- whole answers -------------------------------------------------------------------------------
REPORT_COLUMNS = (
    "milestone_id",
    "name",
    "kind",
    "reference",
    "expected_finish",
    "forecast",
    "float_days",
    "health",
    "achieved_on",
    "slip_days",
    "reschedules",
    "on_time",
    "state",
)
CHANGE_COLUMNS = (
    "milestone_id",
    "then_expected_finish",
    "now_expected_finish",
    "moved_days",
    "then_state",
    "now_state",
)


def report(data: dict[str, Any]) -> str:
    """Planned vs actual per milestone, the project's figures, and what moved when compared."""
    now = data.get("now", data)
    rate_ = "-" if now["on_time_rate"] is None else f"{now['on_time_rate']:.0%}"
    lines = [
        table(now["milestones"], REPORT_COLUMNS),
        "",
        f"baseline {now['baseline'] or '(first planned dates)'}; position {now['position']}"
        f"{'; as of ' + now['as_of'] if now['as_of'] else ''}",
        f"achieved {now['achieved']}/{now['planned']}, on time {now['on_time']} ({rate_}); "
        f"mean slip {now['mean_slip_days']} days, worst {now['worst_slip_days']}; "
        f"expected finish {now['expected_finish']} vs {now['reference_finish']} "
        f"(schedule variance {now['schedule_variance_days']} days)",
        "critical chain: "
        + (" -> ".join(now["critical_chain"]) or "(none open)")
        + f"; project float {now['project_float_days']} days"
        + (f"; target {now['target']}" if now["target"] else ""),
        _backtest_line(now["backtest"]),
    ]
    if "changes" in data:
        lines += ["", "changed since the compared point:", table(data["changes"], CHANGE_COLUMNS)]
    return "\n".join(wrapped(line) for line in lines)


def _backtest_line(backtest: dict[str, Any]) -> str:
    if not backtest["samples"]:
        return "forecast backtest: no sample yet (it needs milestones achieved after a pace)"
    return (
        f"forecast backtest: {backtest['samples']} sample(s) "
        f"(at 25/50/75 % of each achieved milestone's time), "
        f"mean absolute error {backtest['mean_absolute_error_days']} days, "
        f"bias {backtest['bias_days']:+} days (positive: the forecast was late)"
    )


PATH_COLUMNS = (
    "milestone_id",
    "due",
    "forecast",
    "early_finish",
    "late_finish",
    "float_days",
    "critical",
    "drives",
)


def critical_path(data: dict[str, Any]) -> str:
    """Each milestone's passes and float, then the chain and the finish it is measured to."""
    finish = data["finish"] or "-"
    measured = (
        f"target {data['target']}" if data["target"] else "latest due date of the last milestones"
    )
    lines = [
        table(data["milestones"], PATH_COLUMNS),
        "",
        "critical chain: " + (" -> ".join(data["chain"]) or "(none open)"),
        f"finish {finish} ({measured}); project float {data['project_float_days']} days",
    ]
    return "\n".join(wrapped(line) for line in lines)


def wrapped(text: str) -> str:
    """Lines of prose broken to the terminal's width (tables already fit it)."""
    width = TERMINAL.get().width
    if all(len(line) <= width for line in text.splitlines()):
        return text
    return "\n".join(
        textwrap.fill(
            line,
            width,
            subsequent_indent=" " * (len(line) - len(line.lstrip()) + 4),
            break_on_hyphens=False,
        )
        if len(line) > width
        else line
        for line in text.splitlines()
    )


DATE_COLUMN = len("2026-01-05 ")


def trend(data: dict[str, Any]) -> str:
    """A row per milestone, a column per report date, the expected finish in each cell: the latest
    report dates that fit the terminal (a line says how many earlier ones ``--json`` has)."""
    rows = [
        {"milestone_id": s["milestone_id"], **{point[0]: point[1] for point in s["points"]}}
        for s in data["series"]
    ]
    dates = list(data["report_dates"])
    first = max([len("milestone_id"), *(len(r["milestone_id"]) for r in rows)])
    fit = max((TERMINAL.get().width - first) // DATE_COLUMN, 1)
    shown = table(rows, ["milestone_id", *dates[-fit:]])
    if len(dates) > fit:
        shown += f"\n({len(dates) - fit} earlier report date(s) left out to fit; --json has them)"
    return shown


def digest_preview(data: dict[str, Any]) -> str:
    return wrapped(render_digest(data["digest"]))


def digest_sent(data: dict[str, Any]) -> str:
    queued = data["queued_deliveries"]
    return wrapped(
        f"{render_digest(data['digest'])}\n\n(recorded; queued for {queued} subscriber(s))"
    )
