"""Evaluating success: the planned-versus-actual report and the milestone trend analysis (MTA).

Pure functions over a project's stored events (``(position, StoredEvent)`` in stream order), so
time travel is a cut of the event log, not a copy: ``cut(events, position=N)`` keeps what had
been appended up to position N, ``cut(events, as_of=DATE)`` what had happened by the end of
that day (the events' ``time``). The query service loads the events; nothing here does I/O or
reads a clock (``today`` is an input).

Definitions (also in the README):
- *reference date* of a milestone: its due date in the chosen baseline (the latest one unless
  named), or its first planned due date when there is no baseline or the milestone is not in it;
- *expected finish*: the one definition the status, the Gantt, the report and the trend share,
  ``services.domain.health``'s: the achieved date once achieved; else the latest of the due
  date, each open task's due date and each finish-to-start predecessor's expected finish plus
  the lag (and no earlier than ``today`` once the due date has passed);
- *health*: ``services.domain.health``'s rules, as of the report's day;
- *slip* (days): expected finish minus reference; positive is late;
- *on time*: achieved on or before its reference date;
- *on-time rate*: on-time milestones / achieved milestones;
- *schedule variance* (days): expected finish minus reference finish, where a finish is the
  latest date over the milestones that are not cancelled.

So the report is the status as it stood on its day: a milestone's ``expected_finish`` and
``health`` in a report of today are the ones the status and the Gantt show, and the last point
of a trend line (the trend's last report date is ``until``, today by default) is that date too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import msgspec

from events import (
    BaselineSet,
    DependencyAdded,
    DependencyRemoved,
    MilestoneAchieved,
    MilestoneCancelled,
    MilestoneMissed,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectTargetSet,
    StatusReported,
    StoredEvent,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
)
from services.domain.dates import add_days, utc_date
from services.domain.forecast import Backtest, BacktestPoint, checkpoint_fractions, summarise
from services.domain.health import Judgement, judge

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
    expected_finish: dt.date  # as the status defines it (services.domain.health)
    health: str  # as of the report's day
    slip_days: int  # expected finish - reference
    on_time: bool | None  # None while open
    state: str  # achieved | cancelled | open | overdue
    forecast: dt.date | None  # from the pace of work (services.domain.forecast), while open
    forecast_low: dt.date | None
    forecast_high: dt.date | None
    float_days: int | None  # before the project's finish moves (services.domain.critical_path)
    critical: bool


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
    expected_finish: dt.date | None
    schedule_variance_days: int | None
    status_reports: list[StatusNote]
    target: dt.date | None  # the project's target finish (ProjectTargetSet)
    critical_chain: list[str]  # the critical milestones, predecessors first
    project_float_days: int | None  # the least float of the open milestones
    backtest: Backtest  # how wrong the forecast has been on the milestones achieved


class _Milestone(msgspec.Struct, kw_only=True):
    """A milestone's facts as the log stood: what ``services.domain.health.judge`` reads (the
    status row's fields of the same names, folded the same way from the same events)."""

    planned: MilestonePlanned
    milestone_id: str
    due: dt.date
    planned_on: dt.date
    work_start: dt.date | None = None
    achieved_at: dt.datetime | None = None
    cancelled: bool = False
    missed: bool = False
    tasks: dict[str, bool] = {}
    task_dues: dict[str, dt.date] = {}
    tasks_done_on: dict[str, dt.date] = {}
    predecessors: dict[str, int] = {}
    reschedules: int = 0

    @property
    def ord(self) -> int:
        return self.planned.order

    @property
    def achieved_on(self) -> dt.date | None:
        return utc_date(self.achieved_at) if self.achieved_at else None

    @property
    def tasks_total(self) -> int:
        return len(self.tasks)

    @property
    def tasks_done(self) -> int:
        return sum(self.tasks.values())

    @property
    def progress(self) -> int:
        return 100 * self.tasks_done // self.tasks_total if self.tasks else 0


class _Project(msgspec.Struct, kw_only=True):
    milestones: dict[str, _Milestone] = {}
    baselines: dict[str, dict[str, dt.date]] = {}  # name -> milestone -> due, in the order set
    notes: list[StatusNote] = []
    position: int = 0
    target: dt.date | None = None  # ProjectTargetSet


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
        event = stored.data
        if isinstance(event, MilestonePlanned):
            project.milestones[event.milestone_id] = _Milestone(
                planned=event,
                milestone_id=event.milestone_id,
                due=event.due,
                planned_on=min(stored.time.date(), event.due),
            )
        elif isinstance(event, BaselineSet):
            project.baselines[event.name] = dict(event.planned)
        elif isinstance(event, ProjectTargetSet):
            project.target = event.target
        elif isinstance(event, StatusReported):
            project.notes.append(
                StatusNote(
                    position=position,
                    time=stored.time,
                    health=event.health,
                    note=event.note,
                    milestone_id=event.milestone_id,
                    actor=stored.actor,
                )
            )
        elif (m := project.milestones.get(getattr(event, "milestone_id", None) or "")) is not None:
            _evolve(m, event, stored.time)
    return project


def _evolve(m: _Milestone, event: object, time: dt.datetime) -> None:
    """One event's change to a milestone's facts (as ``projections.status`` folds them)."""
    match event:
        case MilestoneRescheduled(new_due=new_due):
            m.due, m.reschedules, m.missed = new_due, m.reschedules + 1, False
        case MilestoneAchieved(achieved_at=at):
            m.achieved_at = at or time
        case MilestoneCancelled():
            m.cancelled = True
        case MilestoneMissed():
            m.missed = True
        case TaskAdded(task_id=t, start=start, due=due):
            m.tasks = {**m.tasks, t: False}
            if due is not None:
                m.task_dues = {**m.task_dues, t: due}
            if start is not None and (m.work_start is None or start < m.work_start):
                m.work_start = start
        case TaskCompleted(task_id=t, result=result, completed_at=at) if t in m.tasks:
            m.tasks = {**m.tasks, t: result != "failed"}
            rest = {k: v for k, v in m.tasks_done_on.items() if k != t}
            m.tasks_done_on = {**rest, t: utc_date(at or time)} if m.tasks[t] else rest
        case TaskReopened(task_id=t) if t in m.tasks:
            m.tasks = {**m.tasks, t: False}
            m.tasks_done_on = {k: v for k, v in m.tasks_done_on.items() if k != t}
        case DependencyAdded(depends_on=d, lag_days=lag):
            m.predecessors = {**m.predecessors, d: lag}
        case DependencyRemoved(depends_on=d):
            m.predecessors = {k: v for k, v in m.predecessors.items() if k != d}


def report(
    project_id: str,
    events: Sequence[Positioned],
    *,
    today: dt.date,
    as_of: dt.date | None = None,
    position: int | None = None,
    baseline: str | None = None,
    with_backtest: bool = True,
) -> Report:
    """The planned-versus-actual report, as the project stood at ``position``/``as_of``
    (``with_backtest`` false: an empty backtest, for a page that does not show it — it folds
    the log once per checkpoint day)."""
    state = fold(cut(events, position=position, as_of=as_of))
    names = list(state.baselines)
    if baseline is not None and baseline not in state.baselines:
        raise KeyError(baseline)
    chosen = baseline or (names[-1] if names else None)
    planned_in = state.baselines.get(chosen, {}) if chosen else {}
    judged_on = min(as_of, today) if as_of else today
    verdicts = judge(state.milestones.values(), judged_on, target=state.target)
    lines = []
    for mid, m in sorted(state.milestones.items(), key=lambda kv: (kv[1].planned.order, kv[0])):
        reference = planned_in.get(mid, m.planned.due)
        verdict = verdicts[mid]
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
                expected_finish=verdict.expected_finish,
                health=verdict.health,
                slip_days=(verdict.expected_finish - reference).days,
                on_time=on_time,
                state=status,
                forecast=verdict.forecast,
                forecast_low=verdict.forecast_low,
                forecast_high=verdict.forecast_high,
                float_days=verdict.float_days,
                critical=verdict.critical,
            )
        )
    live = [line for line in lines if not line.cancelled]
    achieved = [line for line in live if line.achieved_on]
    on_time_count = sum(1 for line in achieved if line.on_time)
    slips = [line.slip_days for line in live]
    reference_finish = max((line.reference for line in live), default=None)
    expected_finish = max((line.expected_finish for line in live), default=None)
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
        expected_finish=expected_finish,
        schedule_variance_days=(expected_finish - reference_finish).days
        if expected_finish and reference_finish
        else None,
        status_reports=state.notes,
        target=state.target,
        critical_chain=[line.milestone_id for line in _in_chain_order(lines, verdicts)],
        project_float_days=min(
            (
                line.float_days
                for line in live
                if line.float_days is not None and not line.achieved_on
            ),
            default=None,
        ),
        backtest=backtest(cut(events, position=position, as_of=as_of), judged_on)
        if with_backtest
        else summarise([]),
    )


def _in_chain_order(
    lines: list[MilestoneLine], verdicts: dict[str, Judgement]
) -> list[MilestoneLine]:
    """The critical milestones in the critical path's order (predecessors first)."""
    chain = [line for line in lines if line.critical]
    return sorted(chain, key=lambda line: verdicts[line.milestone_id].rank)


MAX_BACKTESTED = 60  # the most recently achieved milestones a backtest checks


def backtest(events: Sequence[Positioned], today: dt.date) -> Backtest:
    """How wrong the forecast has been: for every milestone achieved by ``today``, the forecast
    the log gave at 25 %, 50 % and 75 % of the time from its planning to its due date (each
    day before it was achieved, the log cut at the end of that day), against the day it was
    achieved (``services.domain.forecast.summarise``: the mean absolute error and the bias)."""
    final = fold(events)
    asked: dict[dt.date, list[tuple[str, float, dt.date]]] = {}
    achieved = sorted(
        (m for m in final.milestones.values() if m.achieved_on and not m.cancelled),
        key=lambda m: (m.achieved_on, m.milestone_id),
    )
    for m in achieved[-MAX_BACKTESTED:]:  # each checkpoint day folds the log once
        mid, actual = m.milestone_id, m.achieved_on
        if actual is None or actual > today:
            continue
        for fraction, day in checkpoint_fractions(m.planned_on, m.due):
            if day < actual:
                asked.setdefault(day, []).append((mid, fraction, actual))
    dated = [(utc_date(e.time), (p, e)) for p, e in events]
    points = []
    for day in sorted(asked):
        then = fold(pe for happened, pe in dated if happened <= day)
        verdicts = judge(then.milestones.values(), day, target=then.target)
        for mid, fraction, actual in asked[day]:
            said = verdicts[mid].forecast if mid in verdicts else None
            points.append(
                BacktestPoint(
                    milestone_id=mid,
                    at_fraction=fraction,
                    on=day,
                    forecast=said,
                    actual=actual,
                    error_days=(said - actual).days if said is not None else None,
                )
            )
    points.sort(key=lambda pt: (pt.milestone_id, pt.at_fraction))
    return summarise(points)


def compare(then: Report, now: Report) -> list[dict]:
    """Each milestone whose expected finish or state moved between two reports, and by how many
    days."""
    before = {m.milestone_id: m for m in then.milestones}
    changes = []
    for m in now.milestones:
        old = before.get(m.milestone_id)
        if old is not None and (old.expected_finish, old.state) == (m.expected_finish, m.state):
            continue
        changes.append(
            {
                "milestone_id": m.milestone_id,
                "then_expected_finish": old.expected_finish if old else None,
                "now_expected_finish": m.expected_finish,
                "then_state": old.state if old else None,
                "now_state": m.state,
                "moved_days": (m.expected_finish - old.expected_finish).days if old else None,
            }
        )
    return changes


MAX_CUTOFFS = 520  # weekly report dates of a trend: ten years of Mondays


class TrendPoint(msgspec.Struct, array_like=True):
    """[report date, expected finish on that date, forecast on that date or null]: the compact
    shape of a chart point."""

    report_date: dt.date
    expected_finish: dt.date
    forecast: dt.date | None = None


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
    """Every day with a ``StatusReported`` or a reschedule, a weekly cut-off (Mondays) from the
    first planned milestone to ``until``, and ``until`` itself (so a line ends where the status
    stands). Over more than ``MAX_CUTOFFS`` weeks (a log that
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
        days.add(until)
    return sorted(d for d in days if d <= until)


def trend(
    project_id: str, events: Sequence[Positioned], *, today: dt.date, until: dt.date | None = None
) -> Trend:
    """Milestone trend analysis: for each report date, each milestone's expected finish as judged
    on that date (x: report date, y: expected finish; flat = on plan, rising = slipping, on the
    diagonal = reached)."""
    last_day = until or today
    dates = report_dates(events, last_day)
    series: dict[str, TrendSeries] = {}
    dated = [(utc_date(e.time), (p, e)) for p, e in events]  # ``cut`` by day, computed once
    for day in dates:
        state = fold(pe for happened, pe in dated if happened <= day)
        verdicts = judge(state.milestones.values(), day, target=state.target)
        for mid, m in state.milestones.items():
            if m.cancelled:
                continue
            line = series.setdefault(
                mid, TrendSeries(milestone_id=mid, name=m.planned.name, points=[], achieved_on=None)
            )
            verdict = verdicts[mid]
            line.points.append(TrendPoint(day, verdict.expected_finish, verdict.forecast))
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
