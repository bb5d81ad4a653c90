"""Evaluating success: the planned-versus-actual report and the milestone trend analysis (MTA).

Pure functions over a project's stored events (``(position, StoredEvent)`` in stream order), so
time travel is a cut of the event log, not a copy: ``cut(events, position=N)`` keeps what had
been appended up to position N, ``cut(events, as_of=DATE)`` what had happened by the end of
that day (the events' ``time``). The query service loads the events; nothing here does I/O or
reads a clock (``today`` is an input).

Definitions (also in the README):
- *reference date* of a milestone: its due date in the chosen baseline (the latest one unless
  named), or its first planned due date when there is no baseline or the milestone is not in it;
- *forecast*: the achieved date when achieved, else the current due date;
- *slip* (days): forecast minus reference; positive is late;
- *on time*: achieved on or before its reference date;
- *on-time rate*: on-time milestones / achieved milestones;
- *schedule variance* (days): forecast finish minus reference finish, where a finish is the
  latest date over the milestones that are not cancelled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import msgspec

from events import (
    BaselineSet,
    MilestoneAchieved,
    MilestoneCancelled,
    MilestonePlanned,
    MilestoneRescheduled,
    StatusReported,
    StoredEvent,
)
from services.domain.dates import add_days, utc_date

Positioned = tuple[int, StoredEvent]


class MilestoneLine(msgspec.Struct, kw_only=True):
    milestone_id: str
    name: str
    kind: str
    phase: str | None
    order: int
    first_planned: dt.date
    reference: dt.date
    baseline_due: dt.date | None
    due: dt.date
    achieved_on: dt.date | None
    cancelled: bool
    reschedules: int
    forecast: dt.date
    slip_days: int
    on_time: bool | None  # None while open
    state: str  # achieved | cancelled | open | overdue


class StatusNote(msgspec.Struct, kw_only=True):
    position: int
    time: dt.datetime
    health: str
    note: str
    milestone_id: str | None = None
    actor: str | None = None


class Report(msgspec.Struct, kw_only=True):
    project_id: str
    position: int  # the last event position the report includes
    as_of: dt.date | None
    baseline: str | None
    baselines: list[str]
    milestones: list[MilestoneLine]
    planned: int
    achieved: int
    on_time: int
    on_time_rate: float | None
    mean_slip_days: float | None
    worst_slip_days: int | None
    reference_finish: dt.date | None
    forecast_finish: dt.date | None
    schedule_variance_days: int | None
    status_reports: list[StatusNote]


class _Milestone(msgspec.Struct, kw_only=True):
    planned: MilestonePlanned
    due: dt.date
    achieved_on: dt.date | None = None
    cancelled: bool = False
    reschedules: int = 0


class _Project(msgspec.Struct, kw_only=True):
    milestones: dict[str, _Milestone] = {}
    baselines: dict[str, dict[str, dt.date]] = {}  # name -> milestone -> due, in the order set
    notes: list[StatusNote] = []
    position: int = 0


def cut(
    events: Sequence[Positioned], *, position: int | None = None, as_of: dt.date | None = None
) -> list[Positioned]:
    """The events as the log stood at ``position`` and/or by the end of the day ``as_of``."""
    out = list(events)
    if position is not None:
        out = [(p, e) for p, e in out if p <= position]
    if as_of is not None:
        out = [(p, e) for p, e in out if utc_date(e.time) <= as_of]
    return out


def fold(events: Iterable[Positioned]) -> _Project:
    project = _Project(milestones={}, baselines={}, notes=[])
    for position, stored in events:
        project.position = max(project.position, position)
        match stored.data:
            case MilestonePlanned() as e:
                project.milestones[e.milestone_id] = _Milestone(planned=e, due=e.due)
            case MilestoneRescheduled(milestone_id=m, new_due=new_due) if m in project.milestones:
                project.milestones[m].due = new_due
                project.milestones[m].reschedules += 1
            case MilestoneAchieved(milestone_id=m, achieved_at=at) if m in project.milestones:
                project.milestones[m].achieved_on = utc_date(at or stored.time)
            case MilestoneCancelled(milestone_id=m) if m in project.milestones:
                project.milestones[m].cancelled = True
            case BaselineSet(name=name, planned=planned):
                project.baselines[name] = dict(planned)
            case StatusReported() as e:
                project.notes.append(
                    StatusNote(
                        position=position,
                        time=stored.time,
                        health=e.health,
                        note=e.note,
                        milestone_id=e.milestone_id,
                        actor=stored.actor,
                    )
                )
    return project


def report(
    project_id: str,
    events: Sequence[Positioned],
    *,
    today: dt.date,
    as_of: dt.date | None = None,
    position: int | None = None,
    baseline: str | None = None,
) -> Report:
    """The planned-versus-actual report, as the project stood at ``position``/``as_of``."""
    state = fold(cut(events, position=position, as_of=as_of))
    names = list(state.baselines)
    if baseline is not None and baseline not in state.baselines:
        raise KeyError(baseline)
    chosen = baseline or (names[-1] if names else None)
    planned_in = state.baselines.get(chosen, {}) if chosen else {}
    judged_on = min(as_of, today) if as_of else today
    lines = []
    for mid, m in sorted(state.milestones.items(), key=lambda kv: (kv[1].planned.order, kv[0])):
        reference = planned_in.get(mid, m.planned.due)
        forecast = m.achieved_on or m.due
        on_time = (m.achieved_on <= reference) if m.achieved_on else None
        if m.cancelled:
            status = "cancelled"
        elif m.achieved_on:
            status = "achieved"
        else:
            status = "overdue" if m.due < judged_on else "open"
        lines.append(
            MilestoneLine(
                milestone_id=mid,
                name=m.planned.name,
                kind=m.planned.kind,
                phase=m.planned.phase,
                order=m.planned.order,
                first_planned=m.planned.due,
                reference=reference,
                baseline_due=planned_in.get(mid),
                due=m.due,
                achieved_on=m.achieved_on,
                cancelled=m.cancelled,
                reschedules=m.reschedules,
                forecast=forecast,
                slip_days=(forecast - reference).days,
                on_time=on_time,
                state=status,
            )
        )
    live = [line for line in lines if not line.cancelled]
    achieved = [line for line in live if line.achieved_on]
    on_time_count = sum(1 for line in achieved if line.on_time)
    slips = [line.slip_days for line in live]
    reference_finish = max((line.reference for line in live), default=None)
    forecast_finish = max((line.forecast for line in live), default=None)
    return Report(
        project_id=project_id,
        position=state.position,
        as_of=as_of,
        baseline=chosen,
        baselines=names,
        milestones=lines,
        planned=len(live),
        achieved=len(achieved),
        on_time=on_time_count,
        on_time_rate=round(on_time_count / len(achieved), 4) if achieved else None,
        mean_slip_days=round(sum(slips) / len(slips), 2) if slips else None,
        worst_slip_days=max(slips) if slips else None,
        reference_finish=reference_finish,
        forecast_finish=forecast_finish,
        schedule_variance_days=(forecast_finish - reference_finish).days
        if forecast_finish and reference_finish
        else None,
        status_reports=state.notes,
    )


def compare(then: Report, now: Report) -> list[dict]:
    """Each milestone whose forecast or state moved between two reports, and by how many days."""
    before = {m.milestone_id: m for m in then.milestones}
    changes = []
    for m in now.milestones:
        old = before.get(m.milestone_id)
        if old is not None and (old.forecast, old.state) == (m.forecast, m.state):
            continue
        changes.append(
            {
                "milestone_id": m.milestone_id,
                "then_forecast": old.forecast if old else None,
                "now_forecast": m.forecast,
                "then_state": old.state if old else None,
                "now_state": m.state,
                "moved_days": (m.forecast - old.forecast).days if old else None,
            }
        )
    return changes


MAX_CUTOFFS = 520  # weekly report dates of a trend: ten years of Mondays


class TrendPoint(msgspec.Struct, array_like=True):
    """[report date, forecast]: the compact shape of a chart point."""

    report_date: dt.date
    forecast: dt.date


class TrendSeries(msgspec.Struct, kw_only=True):
    milestone_id: str
    name: str
    points: list[TrendPoint]
    achieved_on: dt.date | None


class Trend(msgspec.Struct, kw_only=True):
    project_id: str
    position: int
    report_dates: list[dt.date]
    series: list[TrendSeries]


def report_dates(events: Sequence[Positioned], until: dt.date) -> list[dt.date]:
    """Every day with a ``StatusReported`` or a reschedule, and a weekly cut-off (Mondays) from
    the first planned milestone to ``until``. Over more than ``MAX_CUTOFFS`` weeks (a log that
    holds a time in year 1, say) the cut-offs are every n-th Monday, so that there are at most
    ``MAX_CUTOFFS`` of them: the trend folds the log once per report date."""
    days = {
        utc_date(e.time)
        for _, e in events
        if isinstance(e.data, (StatusReported, MilestoneRescheduled))
    }
    planned = [utc_date(e.time) for _, e in events if isinstance(e.data, MilestonePlanned)]
    if planned:
        start = min(planned)
        monday = add_days(start, (7 - start.weekday()) % 7)
        weeks = (until - monday).days // 7 + 1
        step = 7 * max(1, -(-weeks // MAX_CUTOFFS))
        while monday <= until:
            days.add(monday)
            if monday == (after := add_days(monday, step)):
                break  # the end of the calendar
            monday = after
        days.add(start)
    return sorted(d for d in days if d <= until)


def trend(
    project_id: str, events: Sequence[Positioned], *, today: dt.date, until: dt.date | None = None
) -> Trend:
    """Milestone trend analysis: for each report date, each milestone's forecast on that date
    (x: report date, y: forecast; flat = on plan, rising = slipping, on the diagonal = reached)."""
    last_day = until or today
    dates = report_dates(events, last_day)
    series: dict[str, TrendSeries] = {}
    dated = [(utc_date(e.time), (p, e)) for p, e in events]  # ``cut`` by day, computed once
    for day in dates:
        state = fold(pe for happened, pe in dated if happened <= day)
        for mid, m in state.milestones.items():
            if m.cancelled:
                continue
            line = series.setdefault(
                mid, TrendSeries(milestone_id=mid, name=m.planned.name, points=[], achieved_on=None)
            )
            line.points.append(TrendPoint(day, m.achieved_on or m.due))
            line.achieved_on = m.achieved_on
    order = fold(events).milestones
    ranked = sorted(
        series.values(), key=lambda s: (order[s.milestone_id].planned.order, s.milestone_id)
    )
    return Trend(
        project_id=project_id,
        position=max((p for p, _ in events), default=0),
        report_dates=dates,
        series=ranked,
    )
