"""Milestones as an RFC 5545 calendar (README "Calendar feeds"). Pure: the judged status rows
(what the status query answers, ``Queries.judged``), the address the links point at and the
time the feed is made come in; the bytes of a VCALENDAR come out.

One all-day VEVENT per milestone on its current due date. Its UID never changes, and its
SEQUENCE counts the revisions a calendar must apply in place: each reschedule, and the
cancellation (a cancelled milestone cannot be rescheduled, so it only grows). Escaping, line
folding at 75 octets and CRLF line ends are ``icalendar``'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from icalendar import Alarm, Calendar, Event

PRODID = "-//Milestones//Milestones calendar feed//EN"
UID_DOMAIN = "milestones"
REFRESH = dt.timedelta(hours=1)  # how often a client is asked to poll (RFC 7986)
MAX_REMINDER_DAYS = 30
ACHIEVED_MARK = "✓ achieved"
CANCELLED_MARK = "(cancelled)"


@dataclass(frozen=True)
class FeedProject:
    project_id: str
    name: str
    milestones: Sequence[Mapping[str, Any]]  # judged rows, as the status query answers them


def uid(project_id: str, milestone_id: str) -> str:
    """Stable for good: ids are ``[A-Za-z0-9_-]`` (no dot), so the pair reads back unambiguously."""
    return f"{milestone_id}.{project_id}@{UID_DOMAIN}"


def sequence(row: Mapping[str, Any]) -> int:
    return int(row["reschedules"]) + (1 if row["cancelled"] else 0)


def milestone_url(base_url: str, project_id: str, milestone_id: str) -> str:
    return f"{base_url.rstrip('/')}/ui/projects/{project_id}/milestones/{milestone_id}"


def feed_url(base_url: str, projects: Sequence[str], token: str) -> str:
    """The address a calendar subscribes to with a feed credential's token: its project's feed,
    or (several projects) the feed across them."""
    base = base_url.rstrip("/")
    path = f"/projects/{projects[0]}/milestones.ics" if len(projects) == 1 else "/calendar.ics"
    return f"{base}{path}?{urlencode({'token': token})}"


def summary(row: Mapping[str, Any], project: str | None = None) -> str:
    text = f"{project}: {row['name']}" if project else str(row["name"])
    if row["cancelled"]:
        return f"{text} {CANCELLED_MARK}"
    if row["achieved_at"] is not None:
        return f"{text} {ACHIEVED_MARK}"
    return text


def _date(value: object) -> str:
    if isinstance(value, dt.datetime):  # an achievement's time: its day (UTC) is what counts
        value = value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
    return value.isoformat() if isinstance(value, dt.date) else "—"


def description(row: Mapping[str, Any], url: str) -> str:
    """What the status says about it, in lines: health and its reasons, the schedule words
    (README "Decisions the open issues share"), progress, and the link."""
    lines = [f"Health: {str(row['health']).replace('_', ' ')}"]
    lines += [f"- {reason}" for reason in row["health_reasons"]]
    due = f"Due: {_date(row['due'])}"
    if row["reschedules"]:
        times = "time" if row["reschedules"] == 1 else "times"
        first = _date(row["first_due"])
        due += f" (first planned {first}, rescheduled {row['reschedules']} {times})"
    lines.append(due)
    achieved = row["achieved_at"]
    if achieved is not None:
        lines.append(f"Achieved: {_date(achieved)}")
    elif not row["cancelled"]:
        lines.append(f"Expected finish: {_date(row['expected_finish'])}")
        if row.get("forecast") is not None:
            spread = ""
            if row.get("forecast_low") is not None and row.get("forecast_high") is not None:
                spread = f" ({_date(row['forecast_low'])} to {_date(row['forecast_high'])})"
            lines.append(f"Forecast: {_date(row['forecast'])}{spread}")
        if row.get("tasks_total"):
            lines.append(
                f"Progress: {row['tasks_done']} of {row['tasks_total']} tasks ({row['progress']}%)"
            )
    lines.append(f"Kind: {row['kind']}" + (f" · phase {row['phase']}" if row.get("phase") else ""))
    lines.append(url)
    return "\n".join(lines)


def event(
    project: FeedProject,
    row: Mapping[str, Any],
    *,
    base_url: str,
    stamp: dt.datetime,
    reminder_days: int | None,
    prefix_project: bool,
) -> Event:
    due: dt.date = row["due"]
    url = milestone_url(base_url, project.project_id, row["milestone_id"])
    e = Event()
    e.add("uid", uid(project.project_id, row["milestone_id"]))
    e.add("dtstamp", stamp)
    e.add("last-modified", row["updated_at"])
    e.add("dtstart", due)  # a date: VALUE=DATE, an all-day event
    if due < dt.date.max:  # DTEND is exclusive; without one an all-day event lasts the day
        e.add("dtend", due + dt.timedelta(days=1))  # (a legacy log's 9999-12-31 has no next day)
    e.add("summary", summary(row, project.name if prefix_project else None))
    e.add("description", description(row, url))
    e.add("url", url)
    e.add("status", "CANCELLED" if row["cancelled"] else "CONFIRMED")
    e.add("sequence", sequence(row))
    e.add("categories", [str(row["health"])])
    e.add("transp", "TRANSPARENT")  # a milestone is a date, not a busy day
    open_ = row["achieved_at"] is None and not row["cancelled"]
    if reminder_days is not None and open_:  # no reminder of what is achieved or cancelled
        alarm = Alarm()
        alarm.add("uid", f"reminder-{uid(project.project_id, row['milestone_id'])}")
        alarm.add("action", "DISPLAY")
        alarm.add("description", f"Milestone due: {summary(row)}")
        alarm.add("trigger", -dt.timedelta(days=reminder_days))  # before the due day starts
        e.add_component(alarm)
    return e


def calendar(
    projects: Sequence[FeedProject],
    *,
    name: str,
    base_url: str,
    stamp: dt.datetime,
    reminder_days: int | None = None,
    prefix_project: bool = False,
) -> bytes:
    """The VCALENDAR of ``projects``' milestones. ``stamp`` (UTC): when the feed is made (its
    events' DTSTAMP); ``reminder_days``: a display alarm that many days before each open
    milestone's due day (0: as it starts); ``prefix_project``: summaries start with the
    project's name (a feed across projects)."""
    if reminder_days is not None and not 0 <= reminder_days <= MAX_REMINDER_DAYS:
        raise ValueError(f"reminder_days must be 0 to {MAX_REMINDER_DAYS}, got {reminder_days}")
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("name", name)  # RFC 7986
    cal.add("x-wr-calname", name)  # what most clients read
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", "PT1H")  # the same, for the clients that read only this
    for project in projects:
        for row in sorted(project.milestones, key=lambda r: (r["due"], r["milestone_id"])):
            cal.add_component(
                event(
                    project,
                    row,
                    base_url=base_url,
                    stamp=stamp,
                    reminder_days=reminder_days,
                    prefix_project=prefix_project,
                )
            )
    return cal.to_ical()
