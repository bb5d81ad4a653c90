"""Answers as text for a terminal: a table of chosen columns, or a query's own rendering where a
table does not say it (the report, the trend, the digest). The CLI prints these."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from services.notify.digest import render as render_digest

Cell = Callable[[dict[str, Any]], object]


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], cells: Mapping[str, Cell] | None = None
) -> str:
    """Left-aligned columns under upper-case headers; ``cells`` computes a column from a row."""
    cells = cells or {}
    shown = [[cell(cells[c](r) if c in cells else r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in shown)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in shown]
    return "\n".join(lines)  # padded: byte for byte what the CLI printed before the registry


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "; ".join(map(str, value))
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    "forecast",
    "achieved_on",
    "slip_days",
    "reschedules",
    "on_time",
    "state",
)
CHANGE_COLUMNS = (
    "milestone_id",
    "then_forecast",
    "now_forecast",
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
        f"forecast finish {now['forecast_finish']} vs {now['reference_finish']} "
        f"(schedule variance {now['schedule_variance_days']} days)",
    ]
    if "changes" in data:
        lines += ["", "changed since the compared point:", table(data["changes"], CHANGE_COLUMNS)]
    return "\n".join(lines)


def trend(data: dict[str, Any]) -> str:
    """A row per milestone, a column per report date, the forecast in each cell."""
    rows = [
        {"milestone_id": s["milestone_id"], **{day: due for day, due in s["points"]}}
        for s in data["series"]
    ]
    return table(rows, ["milestone_id", *data["report_dates"]])


def digest_preview(data: dict[str, Any]) -> str:
    return render_digest(data["digest"])


def digest_sent(data: dict[str, Any]) -> str:
    queued = data["queued_deliveries"]
    return f"{render_digest(data['digest'])}\n\n(recorded; queued for {queued} subscriber(s))"
