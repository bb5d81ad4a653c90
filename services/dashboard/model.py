"""What the dashboard draws, computed from a project's events (pure).

Every page folds the project's events from the log, cut at ``as_of`` when one is given, with the
read models' own pure functions (``projections.status.fold``, ``services.domain.health.judge``,
``services.domain.reporting``): so time travel on the dashboard is the same cut of the log as the
report's, and a page shows exactly what the read models would have shown on that day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from events import ProjectCreated, TaskAdded
from projections import status
from projections.status import sign_off
from services.domain import health, reporting
from services.domain.dates import utc_date
from services.domain.reporting import Positioned


class Task(msgspec.Struct, kw_only=True):
    task_id: str
    title: str
    done: bool
    start: dt.date | None
    due: dt.date | None
    check: str | None


class Row(msgspec.Struct, kw_only=True):
    milestone_id: str
    name: str
    kind: str
    phase: str | None
    order: int
    start: dt.date  # the bar: from the day it was planned (or its earliest task start) ...
    end: dt.date  # ... to the latest of its due date and its tasks' due dates
    due: dt.date
    first_due: dt.date
    baseline_due: dt.date | None
    achieved_on: dt.date | None
    expected_finish: dt.date
    forecast: dt.date | None  # from the pace of work (services.domain.forecast)
    forecast_low: dt.date | None
    forecast_high: dt.date | None
    float_days: int | None  # before the project's finish moves (services.domain.critical_path)
    late_finish: dt.date | None  # the float bar ends here
    critical: bool
    health: str
    reasons: list[str]
    predecessors: dict[str, int]
    progress: int
    tasks_done: int
    tasks_total: int
    reschedules: int
    success_criteria: str | None
    last_report: dict | None
    sign_off: dict | None = None  # a decision gate's (projections.status.sign_off.view)


class ProjectView(msgspec.Struct, kw_only=True):
    project_id: str
    name: str
    goals: list[str]
    policy: str
    as_of: dt.date | None
    judged_on: dt.date  # the clock the health was judged with: as_of, else today
    position: int
    baseline: str | None
    baselines: list[str]
    phases: list[str | None]  # in the order they first appear
    rows: list[Row]  # grouped by phase, then by order and id
    report: reporting.Report  # planned vs actual at the same point (it gives the baseline dates)


def _with_gate(row: status.StatusRow, reasons: list[str]) -> list[str]:
    why = sign_off.reason(row)
    return reasons if why is None else [why, *reasons]


def project_view(
    project_id: str,
    events: Sequence[Positioned],
    *,
    today: dt.date,
    as_of: dt.date | None = None,
    baseline: str | None = None,
    gap: int = health.DEFAULT_GAP,
) -> ProjectView:
    """Raises ``KeyError(baseline)`` for an unknown baseline name."""
    cut = reporting.cut(events, as_of=as_of)
    judged_on = min(as_of, today) if as_of else today
    rows = sorted(status.fold(cut).values(), key=lambda r: (r.ord, r.milestone_id))
    report = reporting.report(  # the Gantt does not show the backtest: the report page does
        project_id, events, today=today, as_of=as_of, baseline=baseline, with_backtest=False
    )
    verdicts = health.judge(rows, judged_on, gap, report.target)
    planned_in = {line.milestone_id: line.baseline_due for line in report.milestones}
    created = _created(cut)
    phase_rank: dict[str | None, tuple[int, int]] = {}
    for n, r in enumerate(rows):
        phase_rank.setdefault(r.phase, (r.ord, n))
    out = []
    for r in rows:
        v = verdicts[r.milestone_id]
        achieved = utc_date(r.achieved_at) if r.achieved_at else None
        end = max([r.due, *r.task_dues.values()])
        out.append(
            Row(
                milestone_id=r.milestone_id,
                name=r.name,
                kind=r.kind,
                phase=r.phase,
                order=r.ord,
                start=min(r.work_start or r.planned_on, end),
                end=end,
                due=r.due,
                first_due=r.first_due,
                baseline_due=planned_in.get(r.milestone_id),
                achieved_on=achieved,
                expected_finish=v.expected_finish,
                forecast=v.forecast,
                forecast_low=v.forecast_low,
                forecast_high=v.forecast_high,
                float_days=v.float_days,
                late_finish=v.late_finish,
                critical=v.critical,
                health=v.health,
                reasons=_with_gate(r, v.reasons),
                predecessors=dict(r.predecessors),
                progress=r.progress,
                tasks_done=r.tasks_done,
                tasks_total=r.tasks_total,
                reschedules=r.reschedules,
                success_criteria=r.success_criteria,
                last_report=msgspec.to_builtins(r.last_report) if r.last_report else None,
                sign_off=sign_off.view(r),
            )
        )
    out.sort(key=lambda row: (phase_rank[row.phase], row.order, row.milestone_id))
    phases = sorted(phase_rank, key=lambda p: phase_rank[p])
    return ProjectView(
        project_id=project_id,
        name=project_name(cut, project_id),
        goals=list(created.goals) if created else [],
        policy=created.dependency_policy if created else "notify",
        as_of=as_of,
        judged_on=judged_on,
        position=report.position,
        baseline=report.baseline,
        baselines=report.baselines,
        phases=phases,
        rows=out,
        report=report,
    )


def _created(events: Sequence[Positioned]) -> ProjectCreated | None:
    return next((e.data for _, e in events if isinstance(e.data, ProjectCreated)), None)


def project_name(events: Sequence[Positioned], project_id: str) -> str:
    created = _created(events)
    return created.name if created else project_id


def tasks_of(
    events: Sequence[Positioned], milestone_id: str, as_of: dt.date | None = None
) -> list[Task]:
    cut = reporting.cut(events, as_of=as_of)
    rows = status.fold(cut)
    done = next((r.tasks for (_, m), r in rows.items() if m == milestone_id), {})
    tasks = []
    for _, e in cut:
        if isinstance(e.data, TaskAdded) and e.data.milestone_id == milestone_id:
            t = e.data
            tasks.append(
                Task(
                    task_id=t.task_id,
                    title=t.title,
                    done=done.get(t.task_id, False),
                    start=t.start,
                    due=t.due,
                    check=t.check,
                )
            )
    return tasks
