"""The dashboard's HTML (pure functions from data to a page). Semantic HTML, readable without
JavaScript; the one script only refreshes ``<main>`` when the server says events arrived."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import urlencode

from services.dashboard.layout import (
    as_of_form,
    baseline_picker,
    health_badge,
    page,
    project_tabs,
    query_string,
)
from services.dashboard.model import ProjectView, Task
from services.domain.dates import TIME_MAX, add_days
from services.domain.reporting import Report


def projects_page(projects: list[dict], as_of: dt.date | None, next_cursor: str | None) -> str:
    rows = []
    for p in projects:
        counts = " ".join(f"{health_badge(h)} {n}" for h, n in sorted(p["by_health"].items()))
        nxt = p.get("next_milestone")
        nxt_text = (
            (
                f'<a href="/ui/projects/{escape(p["project_id"])}/milestones/'
                f'{escape(nxt["milestone_id"])}">'
                f"{escape(nxt['name'])}</a> {escape(str(nxt['due']))} {health_badge(nxt['health'])}"
            )
            if nxt
            else "—"
        )
        query = query_string({"as_of": as_of})
        rows.append(
            '<tr><th scope="row">'
            f'<a href="/ui/projects/{escape(p["project_id"])}{query}">{escape(p["name"])}</a>'
            f'<div class="muted">{escape(p["project_id"])}</div></th><td>{p["milestones"]}</td>'
            f"<td>{counts or '—'}</td><td>{nxt_text}</td>"
            f"<td>{escape(str(p.get('expected_finish') or '—'))}</td>"
            f"<td>{'<br>'.join(escape(g) for g in p.get('goals') or []) or '—'}</td></tr>"
        )
    more = (
        f'<p><a href="/ui{query_string({"cursor": next_cursor, "as_of": as_of})}">Next page</a></p>'
        if next_cursor
        else ""
    )
    table = (
        (
            "<table><caption>Projects"
            + (f" as of {as_of.isoformat()}" if as_of else "")
            + "</caption><thead><tr>"
            '<th scope="col">Project</th><th scope="col">Milestones</th>'
            '<th scope="col">By health</th>'
            '<th scope="col">Next milestone</th><th scope="col">Expected finish</th>'
            '<th scope="col">Goals</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
        if rows
        else "<p>No projects yet.</p>"
    )
    return page(
        "Projects",
        "<h1>Projects</h1>" + as_of_form("/ui", as_of) + table + more,
        live=None if as_of else "/ui/live",
    )


def gantt_page(view: ProjectView, svg: str) -> str:
    pid = escape(view.project_id)
    extra = baseline_picker(view.baselines, view.baseline)
    goals = "".join(f"<li>{escape(g)}</li>" for g in view.goals)
    counts: dict[str, int] = {}
    for r in view.rows:
        counts[r.health] = counts.get(r.health, 0) + 1
    summary = " ".join(f"{health_badge(h)} {n}" for h, n in sorted(counts.items()))
    q = query_string({"as_of": view.as_of, "baseline": view.baseline if view.baselines else None})
    details = []
    for r in view.rows:
        details.append(
            f'<tr id="m-{escape(r.milestone_id)}"><th scope="row">'
            f'<a href="/ui/projects/{pid}/milestones/{escape(r.milestone_id)}'
            f'{query_string({"as_of": view.as_of})}">{escape(r.name)}</a>'
            f'<div class="muted">{escape(r.milestone_id)} · {escape(r.kind)}</div></th>'
            f"<td>{escape(r.phase or '—')}</td><td>{r.due.isoformat()}</td>"
            f"<td>{_d(r.baseline_due)}</td>"
            f"<td>{r.expected_finish.isoformat()}</td><td>{_d(r.achieved_on)}</td>"
            f"<td>{r.progress}%</td>"
            f"<td>{health_badge(r.health)}<ul>"
            + "".join(f"<li>{escape(x)}</li>" for x in r.reasons)
            + "</ul></td>"
            f"<td>{', '.join(escape(p) for p in sorted(r.predecessors)) or '—'}</td></tr>"
        )
    body = (
        f"<h1>{escape(view.name)}</h1>"
        + project_tabs(view.project_id, view.as_of, "Gantt")
        + (f"<h2>Goals</h2><ul>{goals}</ul>" if goals else "")
        + f'<p>{summary} <span class="muted">· dependency policy {escape(view.policy)} '
        f"· position {view.position}"
        + (f" · baseline {escape(view.baseline)}" if view.baseline else "")
        + "</span></p>"
        + as_of_form(f"/ui/projects/{pid}", view.as_of, extra)
        + f'<p><a href="/ui/projects/{pid}/gantt.svg{q}" download="{pid}-gantt.svg">'
        "Download the Gantt chart (SVG)</a></p>"
        + f'<figure class="chart" aria-label="Gantt chart">{svg}</figure>'
        + '<h2 id="milestones">Milestones</h2><table>'
        "<caption>Every milestone with its health and why (the chart in words)</caption>"
        '<thead><tr><th scope="col">Milestone</th><th scope="col">Phase</th>'
        '<th scope="col">Due</th><th scope="col">Baseline</th>'
        '<th scope="col">Expected</th><th scope="col">Achieved</th><th scope="col">Done</th>'
        '<th scope="col">Health and reasons</th>'
        f'<th scope="col">Depends on</th></tr></thead><tbody>{"".join(details)}</tbody></table>'
    )
    return page(
        f"{view.name}: Gantt",
        body,
        live=None if view.as_of else f"/ui/live?project_id={view.project_id}",
        crumbs=[("Projects", "/ui")],
    )


def _d(d: dt.date | None) -> str:
    return d.isoformat() if d else "—"


def trend_page(
    pid: str,
    name: str,
    svg: str,
    until: dt.date | None,
    trend_rows: list[dict],
    dates: list[dt.date],
) -> str:
    form = (
        f'<form class="controls" method="get" action="/ui/projects/{escape(pid)}/trend" '
        'aria-label="time travel">'
        f'<label for="until">Report dates until (as of)<input id="until" type="date" name="until" '
        f'value="{until.isoformat() if until else ""}"></label>'
        '<button type="submit">Show</button></form>'
    )
    head = "".join(f'<th scope="col">{d.isoformat()}</th>' for d in dates)
    rows = "".join(
        f'<tr><th scope="row">{escape(r["name"])}</th>'
        + "".join(f"<td>{escape(r['points'].get(d, ''))}</td>" for d in dates)
        + "</tr>"
        for r in trend_rows
    )
    body = (
        f"<h1>{escape(name)}: milestone trend analysis</h1>"
        + project_tabs(pid, None, "Trend (MTA)")
        + form
        + "<p>Each line is a milestone: its forecast (y) at each report date (x). "
        "Flat is on plan, rising is slipping, a line that meets the diagonal has been reached.</p>"
        + f'<p><a href="/ui/projects/{escape(pid)}/trend.svg{query_string({"until": until})}" '
        f'download="{escape(pid)}-trend.svg">'
        "Download the trend chart (SVG)</a></p>"
        + f'<figure class="chart" aria-label="Milestone trend analysis chart">{svg}</figure>'
        + "<details><summary>The chart as a table</summary><table><thead><tr>"
        f'<th scope="col">Milestone</th>{head}'
        f"</tr></thead><tbody>{rows}</tbody></table></details>"
    )
    return page(
        f"{name}: trend",
        body,
        live=None if until else f"/ui/live?project_id={pid}",
        crumbs=[("Projects", "/ui"), (name, f"/ui/projects/{pid}")],
    )


def report_page(pid: str, name: str, report: Report) -> str:
    rate = "—" if report.on_time_rate is None else f"{report.on_time_rate:.0%}"
    kpis = [
        ("On-time rate", f"{rate} ({report.on_time}/{report.achieved} achieved)"),
        (
            "Mean slip",
            f"{report.mean_slip_days} days" if report.mean_slip_days is not None else "—",
        ),
        (
            "Worst slip",
            f"{report.worst_slip_days} days" if report.worst_slip_days is not None else "—",
        ),
        ("Forecast finish", _d(report.forecast_finish)),
        ("Reference finish", _d(report.reference_finish)),
        (
            "Schedule variance",
            f"{report.schedule_variance_days} days"
            if report.schedule_variance_days is not None
            else "—",
        ),
    ]
    rows = "".join(
        '<tr><th scope="row">'
        f'<a href="/ui/projects/{escape(pid)}/milestones/{escape(m.milestone_id)}">'
        f"{escape(m.name)}</a></th>"
        f"<td>{_d(m.reference)}</td><td>{_d(m.forecast)}</td><td>{_d(m.achieved_on)}</td>"
        f"<td>{'+' if m.slip_days > 0 else ''}{m.slip_days}</td><td>{m.reschedules}</td>"
        f"<td>{'yes' if m.on_time else ('no' if m.on_time is False else '—')}</td>"
        f"<td>{escape(m.state)}</td></tr>"
        for m in report.milestones
    )
    extra = baseline_picker(report.baselines, report.baseline)
    notes = "".join(
        f"<li><time>{n.time.date().isoformat()}</time> {health_badge(n.health)} "
        f"{escape(n.milestone_id or 'project')}: {escape(n.note)} "
        f'<span class="muted">({escape(n.actor or "?")})</span></li>'
        for n in reversed(report.status_reports)
    )
    body = (
        f"<h1>{escape(name)}: planned vs actual</h1>"
        + project_tabs(pid, report.as_of, "Report")
        + as_of_form(f"/ui/projects/{escape(pid)}/report", report.as_of, extra)
        + '<div class="kpis">'
        + "".join(f'<div class="kpi">{escape(k)}<b>{escape(v)}</b></div>' for k, v in kpis)
        + "</div>"
        + f"<table><caption>Reference: {escape(report.baseline or 'first planned dates')}; "
        "slip in days (+ is late)</caption>"
        '<thead><tr><th scope="col">Milestone</th><th scope="col">Planned</th>'
        '<th scope="col">Forecast / actual</th>'
        '<th scope="col">Achieved</th><th scope="col">Slip</th><th scope="col">Reschedules</th>'
        '<th scope="col">On time</th>'
        f'<th scope="col">State</th></tr></thead><tbody>{rows}</tbody></table>'
        + (f"<h2>Status reports</h2><ul>{notes}</ul>" if notes else "")
    )
    return page(
        f"{name}: report",
        body,
        live=None if report.as_of else f"/ui/live?project_id={pid}",
        crumbs=[("Projects", "/ui"), (name, f"/ui/projects/{pid}")],
    )


def milestone_page(
    view: ProjectView, mid: str, tasks: list[Task], history: list[dict], audit: list[dict]
) -> str:
    r = next(x for x in view.rows if x.milestone_id == mid)
    pid = escape(view.project_id)
    facts = [
        ("Kind", r.kind),
        ("Phase", r.phase or "—"),
        ("Due", r.due.isoformat()),
        ("First planned", r.first_due.isoformat()),
        ("Baseline", _d(r.baseline_due)),
        ("Expected finish", r.expected_finish.isoformat()),
        ("Achieved", _d(r.achieved_on)),
        ("Progress", f"{r.progress}% ({r.tasks_done}/{r.tasks_total} tasks)"),
        ("Reschedules", str(r.reschedules)),
        ("Success criteria", r.success_criteria or "—"),
        (
            "Depends on",
            ", ".join(f"{p} (+{lag} d)" for p, lag in sorted(r.predecessors.items())) or "—",
        ),
    ]
    report = ""
    if r.last_report:
        rep = r.last_report
        report = (
            f"<p>Last status report: {health_badge(rep['health'])} {escape(rep['note'])} "
            f'<span class="muted">({escape(rep.get("actor") or "?")}, '
            f"{escape(str(rep['reported_at'])[:10])})</span></p>"
        )
    task_rows = "".join(
        f'<tr><th scope="row">{escape(t.title)}<div class="muted">{escape(t.task_id)}</div></th>'
        f"<td>{'done ✓' if t.done else 'open'}</td><td>{_d(t.start)}</td><td>{_d(t.due)}</td>"
        f"<td>{escape(t.check or '—')}</td></tr>"
        for t in tasks
    )
    timeline = "".join(
        f'<li><time datetime="{escape(str(h["occurred_at"]))}">'
        f"{escape(str(h['occurred_at'])[:10])}</time> "
        f"<strong>{escape(h['type'])}</strong>"
        + (
            f" {escape(_d(h['old_due']))} → {escape(_d(h['new_due']))}"
            if h.get("old_due") or h.get("new_due")
            else ""
        )
        + (f": {escape(h['reason'])}" if h.get("reason") else "")
        + f' <span class="muted">by {escape(h.get("actor") or "?")} · <a href="/ui/audit?'
        f"{urlencode({'project_id': view.project_id, 'from_position': h['position']})}"
        f'#p{h["position"]}">position {h["position"]}</a></span></li>'
        for h in history
    )
    audit_rows = "".join(
        '<tr><td><a href="/ui/audit?'
        f"{urlencode({'project_id': view.project_id, 'from_position': a['position']})}"
        f'#p{a["position"]}">{a["position"]}</a></td>'
        f"<td>{escape(str(a['occurred_at'])[:19])}</td><td>{escape(a['type'])}</td>"
        f"<td>{escape(a.get('actor') or '—')}</td>"
        f"<td>{escape(a['source'])}</td><td>{escape(a['correlationid'])}</td>"
        f"<td>{escape(a['causationid'])}</td></tr>"
        for a in audit
    )
    body = (
        f"<h1>{escape(r.name)}</h1>"
        + f'<p>{health_badge(r.health)} <span class="muted">{escape(mid)} in '
        f'<a href="/ui/projects/{pid}">{escape(view.name)}</a></span></p>'
        + "<ul>"
        + "".join(f"<li>{escape(x)}</li>" for x in r.reasons)
        + "</ul>"
        + report
        + as_of_form(f"/ui/projects/{pid}/milestones/{escape(mid)}", view.as_of)
        + "<h2>Status</h2><table><tbody>"
        + "".join(
            f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in facts
        )
        + "</tbody></table>"
        + '<h2>Tasks</h2><table><thead><tr><th scope="col">Task</th><th scope="col">State</th>'
        '<th scope="col">Start</th>'
        '<th scope="col">Due</th><th scope="col">Check</th></tr></thead>'
        f"<tbody>{task_rows}</tbody></table>"
        + f'<h2>History</h2><ol class="timeline">{timeline}</ol>'
        + '<h2>Audit trail</h2><table><thead><tr><th scope="col">Position</th>'
        '<th scope="col">Occurred</th>'
        '<th scope="col">Type</th><th scope="col">Actor</th><th scope="col">Source</th>'
        '<th scope="col">Correlation</th>'
        f'<th scope="col">Causation</th></tr></thead><tbody>{audit_rows}</tbody></table>'
    )
    return page(
        r.name,
        body,
        live=None if view.as_of else f"/ui/live?project_id={view.project_id}",
        crumbs=[("Projects", "/ui"), (view.name, f"/ui/projects/{view.project_id}")],
    )


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
        f"<td>{escape(str(r['occurred_at'])[:19])}</td>"
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
        (
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
