"""The dashboard's HTML (pure functions from data to a page). Semantic HTML, readable without
JavaScript; the one script only refreshes ``<main>`` when the server says events arrived."""

from __future__ import annotations

import datetime as dt
from html import escape
from urllib.parse import urlencode

import msgspec

from services.dashboard import sign_off
from services.dashboard.layout import (
    as_of_form,
    baseline_picker,
    date_cell,
    date_class,
    date_or_dash,
    date_text,
    health_badge,
    page,
    project_tabs,
    query_string,
    words_with_dates,
    wrap,
)
from services.dashboard.model import ProjectView, Row, Task
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
                f"{escape(nxt['name'])}</a> {date_text(nxt['due'])} {health_badge(nxt['health'])}"
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
            f'<td class="date">{escape(str(p.get("expected_finish") or "—"))}</td>'
            f"<td>{'<br>'.join(escape(g) for g in p.get('goals') or []) or '—'}</td></tr>"
        )
    more = (
        f'<p><a href="/ui{query_string({"cursor": next_cursor, "as_of": as_of})}">Next page</a></p>'
        if next_cursor
        else ""
    )
    table = (
        wrap(
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


def _float_cell(r: Row) -> str:
    if r.float_days is None or r.achieved_on is not None:
        return "<td>—</td>"
    chain = " <strong>critical</strong>" if r.critical else ""
    return f'<td class="num">{r.float_days}{chain}</td>'


def _outlook_line(report: Report, *, track_record: bool = True) -> str:
    """The critical chain and (``track_record``) the forecast's backtest, in words."""
    chain = " → ".join(escape(m) for m in report.critical_chain) or "none open"
    bt = report.backtest
    record = (
        f"{bt.samples} forecast(s) made at 25, 50 and 75 % of achieved milestones' time were "
        f"off by {bt.mean_absolute_error_days} days on average (bias {bt.bias_days:+} days: "
        "positive means late)"
        if bt.samples and bt.bias_days is not None
        else "no forecast to check yet"
    )
    floats = (
        f"; project float {report.project_float_days} days"
        if report.project_float_days is not None
        else ""
    )
    target = f"; target {report.target.isoformat()}" if report.target else ""
    record = f" Forecast track record: {record}." if track_record else ""
    return f'<p class="outlook">Critical chain: {chain}{floats}{target}.{record}</p>'


def _calendar_section(pid: str) -> str:
    """The project's calendar feed (README "Calendar feeds"): the link opens with this session;
    a calendar app cannot sign in, so it subscribes to an address holding a feed token."""
    return (
        '<h2 id="calendar">Calendar</h2><p>'
        f'<a href="/projects/{pid}/milestones.ics" type="text/calendar">Calendar (iCal)</a>: '
        "every milestone as an all-day event on its due date, updated in place when it moves. "
        '<span class="muted">To subscribe from a calendar app, use an address with a feed '
        f"token: <code>milestones credentials create --role feed --project {pid}</code> "
        "prints it (an admin issues it; revoking it ends the feed); with "
        "<code>milestones dev --demo</code>, <code>milestones credentials feed-url</code>."
        "</span></p>"
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
            f"<td>{escape(r.phase or '—')}</td>{date_cell(r.due)}{date_cell(r.baseline_due)}"
            f"{date_cell(r.expected_finish)}{date_cell(r.forecast)}{_float_cell(r)}"
            f"{date_cell(r.achieved_on)}"
            f"<td>{r.progress}%</td>"
            f"<td>{health_badge(r.health)}<ul>"
            + "".join(f"<li>{words_with_dates(x)}</li>" for x in r.reasons)
            + "</ul></td>"
            f"<td>{', '.join(escape(p) for p in sorted(r.predecessors)) or '—'}</td></tr>"
        )
    toolbar = as_of_form(
        f"/ui/projects/{pid}",
        view.as_of,
        extra,
        after=f'<a href="/ui/projects/{pid}/gantt.svg{q}" download="{pid}-gantt.svg">'
        "Download SVG</a>"
        f' <a href="/projects/{pid}/plan.xml" download="{pid}.xml">Plan (MS Project XML)</a>'
        f' <a href="/projects/{pid}/milestones.ics" type="text/calendar">Calendar (iCal)</a>',
    )
    body = (
        f"<h1>{escape(view.name)}</h1>"
        + project_tabs(view.project_id, view.as_of, "Gantt")
        + toolbar
        + f'<figure class="chart" aria-label="Gantt chart">{svg}</figure>'
        + f'<p>{summary} <span class="muted">· dependency policy {escape(view.policy)} '
        f"· position {view.position}"
        + (f" · baseline {escape(view.baseline)}" if view.baseline else "")
        + "</span></p>"
        + _outlook_line(view.report, track_record=False)
        + (f"<h2>Goals</h2><ul>{goals}</ul>" if goals else "")
        + '<h2 id="milestones">Milestones</h2>'
        + wrap(
            "<table><caption>Every milestone with its health and why (the chart in words)"
            '</caption><thead><tr><th scope="col">Milestone</th><th scope="col">Phase</th>'
            '<th scope="col">Due</th><th scope="col">Baseline</th>'
            '<th scope="col">Expected</th><th scope="col">Forecast</th>'
            '<th scope="col">Float (days)</th>'
            '<th scope="col">Achieved</th><th scope="col">Done</th>'
            '<th scope="col">Health and reasons</th>'
            f'<th scope="col">Depends on</th></tr></thead><tbody>{"".join(details)}</tbody>'
            "</table>"
        )
        + _calendar_section(pid)
    )
    return page(
        f"{view.name}: Gantt",
        body,
        live=None if view.as_of else f"/ui/live?project_id={view.project_id}",
        crumbs=[("Projects", "/ui")],
    )


def trend_page(
    pid: str,
    name: str,
    svg: str,
    until: dt.date | None,
    trend_rows: list[dict],
    dates: list[dt.date],
    *,
    forecasts: bool = False,
) -> str:
    shown = {"until": until, "forecast": "1" if forecasts else None}
    download = (
        f'<a href="/ui/projects/{escape(pid)}/trend.svg{query_string(shown)}" '
        f'download="{escape(pid)}-trend.svg">Download SVG</a>'
    )
    form = (
        f'<form class="controls" method="get" action="/ui/projects/{escape(pid)}/trend" '
        'aria-label="time travel">'
        f'<label for="until">Report dates until (as of)<input id="until" type="date" name="until" '
        f'value="{until.isoformat() if until else ""}"></label>'
        '<label for="forecast"><input id="forecast" type="checkbox" name="forecast" value="1"'
        f"{' checked' if forecasts else ''}> forecast lines (from the pace of work)</label>"
        f'<button type="submit">Show</button>{download}</form>'
    )
    head = "".join(f'<th scope="col" class="date">{d.isoformat()}</th>' for d in dates)
    rows = "".join(
        f'<tr><th scope="row">{escape(r["name"])}</th>'
        + "".join(f'<td class="date">{escape(r["points"].get(d, ""))}</td>' for d in dates)
        + "</tr>"
        for r in trend_rows
    )
    body = (
        f"<h1>{escape(name)}: milestone trend analysis</h1>"
        + project_tabs(pid, None, "Trend (MTA)")
        + form
        + f'<figure class="chart" aria-label="Milestone trend analysis chart">{svg}</figure>'
        + "<p>Each line is a milestone: its expected finish (y) at each report date (x). "
        "Flat is on plan, rising is slipping, a line that meets the diagonal has been reached."
        + (
            " The dotted line beside each is its forecast from the pace of work on that date."
            if forecasts
            else ""
        )
        + "</p>"
        + "<h2>The chart as a table</h2>"
        + wrap(
            "<table><caption>Expected finish of each milestone at each report date</caption>"
            f'<thead><tr><th scope="col">Milestone</th>{head}'
            f"</tr></thead><tbody>{rows}</tbody></table>"
        )
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
        ("Expected finish", date_or_dash(report.expected_finish)),
        ("Reference finish", date_or_dash(report.reference_finish)),
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
        f"{date_cell(m.reference)}{date_cell(m.expected_finish)}{date_cell(m.achieved_on)}"
        f"<td>{'+' if m.slip_days > 0 else ''}{m.slip_days}</td><td>{m.reschedules}</td>"
        f"<td>{'yes' if m.on_time else ('no' if m.on_time is False else '—')}</td>"
        f"<td>{escape(m.state)}</td></tr>"
        for m in report.milestones
    )
    extra = baseline_picker(report.baselines, report.baseline)
    notes = "".join(
        f"<li>{date_text(n.time.date().isoformat())} {health_badge(n.health)} "
        f"{escape(n.milestone_id or 'project')}: {words_with_dates(n.note)} "
        f'<span class="muted">({escape(n.actor or "?")})</span></li>'
        for n in reversed(report.status_reports)
    )
    body = (
        f"<h1>{escape(name)}: planned vs actual</h1>"
        + project_tabs(pid, report.as_of, "Report")
        + as_of_form(f"/ui/projects/{escape(pid)}/report", report.as_of, extra)
        + _outlook_line(report)
        + '<div class="kpis">'
        + "".join(f'<div class="kpi">{escape(k)}<b>{escape(v)}</b></div>' for k, v in kpis)
        + "</div>"
        + wrap(
            f"<table><caption>Reference: {escape(report.baseline or 'first planned dates')}; "
            "slip in days (+ is late)</caption>"
            '<thead><tr><th scope="col">Milestone</th><th scope="col">Planned</th>'
            '<th scope="col">Expected finish</th>'
            '<th scope="col">Achieved</th><th scope="col">Slip</th>'
            '<th scope="col">Reschedules</th><th scope="col">On time</th>'
            f'<th scope="col">State</th></tr></thead><tbody>{rows}</tbody></table>'
        )
        + (f"<h2>Status reports</h2><ul>{notes}</ul>" if notes else "")
    )
    return page(
        f"{name}: report",
        body,
        live=None if report.as_of else f"/ui/live?project_id={pid}",
        crumbs=[("Projects", "/ui"), (name, f"/ui/projects/{pid}")],
    )


def milestone_page(
    view: ProjectView,
    mid: str,
    tasks: list[Task],
    history: list[dict],
    audit: list[dict],
    signing: Signing | None = None,
) -> str:
    """``signing``: who is signed in (a session), for a decision gate's sign-off form."""
    r = next(x for x in view.rows if x.milestone_id == mid)
    pid = escape(view.project_id)
    facts = [
        ("Kind", r.kind),
        ("Phase", r.phase or "—"),
        ("Due", r.due.isoformat()),
        ("First planned", r.first_due.isoformat()),
        ("Baseline", date_or_dash(r.baseline_due)),
        ("Expected finish", r.expected_finish.isoformat()),
        (
            "Forecast",
            f"{r.forecast.isoformat()} (range {date_or_dash(r.forecast_low)} to "
            f"{date_or_dash(r.forecast_high)})"
            if r.forecast
            else "—",
        ),
        (
            "Float",
            f"{r.float_days} days{', critical' if r.critical else ''}"
            if r.float_days is not None and r.achieved_on is None
            else "—",
        ),
        ("Achieved", date_or_dash(r.achieved_on)),
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
        f"<td>{'done ✓' if t.done else 'open'}</td>{date_cell(t.start)}{date_cell(t.due)}"
        f"<td>{escape(t.check or '—')}</td></tr>"
        for t in tasks
    )
    timeline = "".join(
        f'<li><time datetime="{escape(str(h["occurred_at"]))}">'
        f"{escape(str(h['occurred_at'])[:10])}</time> "
        f"<strong>{escape(h['type'])}</strong>"
        + (
            f" {words_with_dates(date_or_dash(h['old_due']))} → "
            f"{words_with_dates(date_or_dash(h['new_due']))}"
            if h.get("old_due") or h.get("new_due")
            else ""
        )
        + (f": {words_with_dates(h['reason'])}" if h.get("reason") else "")
        + f' <span class="muted">by {escape(h.get("actor") or "?")} · <a href="/ui/audit?'
        f"{urlencode({'project_id': view.project_id, 'from_position': h['position']})}"
        f'#p{h["position"]}">position {h["position"]}</a></span></li>'
        for h in history
    )
    audit_rows = "".join(
        '<tr><td><a href="/ui/audit?'
        f"{urlencode({'project_id': view.project_id, 'from_position': a['position']})}"
        f'#p{a["position"]}">{a["position"]}</a></td>'
        f'<td class="date">{escape(str(a["occurred_at"])[:19])}</td><td>{escape(a["type"])}</td>'
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
        + "".join(f"<li>{words_with_dates(x)}</li>" for x in r.reasons)
        + "</ul>"
        + report
        + as_of_form(f"/ui/projects/{pid}/milestones/{escape(mid)}", view.as_of)
        + "<h2>Status</h2><table><tbody>"
        + "".join(
            f'<tr><th scope="row">{escape(k)}</th><td{date_class(v)}>{escape(v)}</td></tr>'
            for k, v in facts
        )
        + "</tbody></table>"
        + _sign_off(view, r, signing)
        + '<h2>Tasks</h2><table><thead><tr><th scope="col">Task</th><th scope="col">State</th>'
        '<th scope="col">Start</th>'
        '<th scope="col">Due</th><th scope="col">Check</th></tr></thead>'
        f"<tbody>{task_rows}</tbody></table>"
        + f'<h2>History</h2><ol class="timeline">{timeline}</ol>'
        + "<h2>Audit trail</h2>"
        + wrap(
            '<table><thead><tr><th scope="col">Position</th><th scope="col">Occurred</th>'
            '<th scope="col">Type</th><th scope="col">Actor</th><th scope="col">Source</th>'
            '<th scope="col">Correlation</th>'
            f'<th scope="col">Causation</th></tr></thead><tbody>{audit_rows}</tbody></table>'
        )
    )
    return page(
        r.name,
        body,
        live=None if view.as_of else f"/ui/live?project_id={view.project_id}",
        crumbs=[("Projects", "/ui"), (view.name, f"/ui/projects/{view.project_id}")],
    )


class Signing(msgspec.Struct, kw_only=True):
    """Who looks at a milestone page, for its sign-off form: the session's principal's name and
    CSRF token, the outcome of a form just posted, and an idempotency key for the next one."""

    signer: str | None
    csrf: str | None
    query: dict
    form_key: str


def _sign_off(view: ProjectView, r: Row, signing: Signing | None) -> str:
    signing = signing or Signing(signer=None, csrf=None, query={}, form_key="")
    action = f"/ui/projects/{view.project_id}/milestones/{r.milestone_id}/approvals"
    closed = r.achieved_on is not None or r.health == "cancelled" or view.as_of is not None
    return sign_off.section(
        r.sign_off,
        action,
        signing.signer,
        signing.csrf,
        closed,
        signing.query,
        signing.form_key,
    )
