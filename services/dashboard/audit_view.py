"""The audit page: every event, filtered and paginated, with exports (pure HTML)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from html import escape
from typing import Any

from services.dashboard.layout import page, query_string, wrap
from services.domain.dates import TIME_MAX, add_days


def day_after(day: dt.date) -> str:
    """The audit filter ``to`` that ends with ``day``: midnight after it, in RFC 3339 (the end
    of time for 9999-12-31, which has no day after it)."""
    if day == dt.date.max:
        return TIME_MAX.isoformat()
    return add_days(day, 1).isoformat() + "T00:00:00Z"


AUDIT_FILTERS = (
    "project_id",
    "milestone_id",
    "actor",
    "principal",
    "source",
    "type",
    "correlation_id",
)


def audit_page(
    rows: list[dict], params: Mapping[str, Any], next_cursor: str | None, as_of: dt.date | None
) -> str:
    inputs = "".join(
        f'<label for="f-{k}">{escape(k.replace("_", " "))}<input id="f-{k}" name="{k}" '
        f'value="{escape(str(params.get(k) or ""))}"></label>'
        for k in AUDIT_FILTERS
    )
    form = (
        '<form class="controls" method="get" action="/ui/audit" '
        f'aria-label="filter the audit trail">{inputs}'
        '<label for="as_of">As of'
        f'<input id="as_of" type="date" name="as_of" value="{as_of.isoformat() if as_of else ""}">'
        "</label>"
        '<button type="submit">Filter</button> <a href="/ui/audit">Clear</a></form>'
    )
    export = {k: params.get(k) for k in AUDIT_FILTERS}
    if as_of:
        export["to"] = day_after(as_of)
    csv_href = f"/audit{query_string({**export, 'format': 'csv'})}"
    jsonl_href = f"/audit{query_string({**export, 'format': 'jsonl'})}"
    links = (
        f'<p>Export every match: <a href="{csv_href}">CSV</a> · '
        f'<a href="{jsonl_href}">JSON Lines</a></p>'
    )
    body_rows = "".join(
        f'<tr id="p{r["position"]}"><td>{r["position"]}</td>'
        f'<td class="date">{escape(str(r["occurred_at"])[:19])}</td>'
        f"<td>{escape(r['type'])}</td><td>{escape(r['project_id'])}</td>"
        f"<td>{escape(r.get('milestone_id') or '—')}</td><td>{escape(r.get('actor') or '—')}</td>"
        f"<td>{escape(r.get('principal') or '—')}</td><td>{escape(r['source'])}</td>"
        f"<td>{escape(r['correlation_id'])}</td><td><details><summary>data</summary>"
        f"<pre>{escape(str(r['payload']))}</pre></details></td></tr>"
        for r in rows
    )
    next_page = {**{k: params.get(k) for k in AUDIT_FILTERS}, "as_of": as_of, "cursor": next_cursor}
    more = (
        f'<p><a rel="next" href="/ui/audit{query_string(next_page)}">Next page</a></p>'
        if next_cursor
        else ""
    )
    table = (
        wrap(
            "<table><caption>Audit trail, oldest first</caption><thead><tr>"
            '<th scope="col">Position</th>'
            '<th scope="col">Occurred</th><th scope="col">Type</th><th scope="col">Project</th>'
            '<th scope="col">Milestone</th>'
            '<th scope="col">Actor</th><th scope="col">Principal</th><th scope="col">Source</th>'
            '<th scope="col">Correlation</th>'
            '<th scope="col">Event</th>'
            f"</tr></thead><tbody>{body_rows}</tbody></table>"
        )
        if rows
        else "<p>No event matches.</p>"
    )
    return page(
        "Audit",
        "<h1>Audit trail</h1>" + form + links + table + more,
        live=None if as_of else "/ui/live",
        crumbs=[("Projects", "/ui")],
    )
