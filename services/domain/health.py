"""Health, explained: one rule set, judged against the clock (an input) over a project's status
rows.

Pure. ``judge(rows, today)`` gives every milestone its health, the reasons that decided it, its
expected finish and what blocks it. The rules, first match wins (also in the README):

1. ``achieved`` — it was achieved (a reason says by how many days late, if it was);
2. ``cancelled`` — it was cancelled;
3. ``missed`` — its due date passed without achievement: a ``MilestoneMissed`` was recorded
   when the deadline arrived, or ``today`` is after the due date;
4. ``late`` — its *expected finish* is after its due date. The expected finish is the latest of
   its due date, the due date of each open task, and for each finish-to-start predecessor the
   predecessor's expected finish (its achieved date once achieved) plus the lag — so a
   violated dependency (``DependencyViolated``) makes its successor late, with the reason;
5. ``at_risk`` — it still fits, but a predecessor is late or missed; or its progress is behind
   the elapsed time by ``gap`` percentage points or more (elapsed: from its earliest task start,
   or the day it was planned when no task has a start, to its due date; progress: tasks done /
   tasks; a milestone without tasks has no progress to judge);
6. ``at_risk`` — it fits by the rules above, but its *forecast* (``services.domain.forecast``:
   the pace of the project's task completions over the last weeks, projected over the work
   ahead of it) is after its due date; when that slip is more than its *float*
   (``services.domain.critical_path``: the days it may slip before the project's finish
   moves, so the float is negative), the reason names the final milestone it moves and by
   how many days;
7. ``on_track`` — otherwise.

Every open milestone also gets its ``forecast`` (with a ``forecast_low``–``forecast_high``
range) when the project has a pace, and every open milestone its ``float_days`` and whether it
is ``critical``, measured from the later of its expected finish and its forecast to the
project's finish (its target date when set, else the latest due date of its last milestones).

``blocked_by`` lists the predecessors not yet achieved (finish-to-start: it cannot finish
before they do), each with its expected finish and health.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import msgspec

from services.domain.critical_path import CriticalPath, Node, critical_path
from services.domain.dates import add_days, utc_date
from services.domain.forecast import Forecast, Work, forecast

DEFAULT_GAP = 25


class MilestoneFacts(Protocol):
    """What health is judged from: the facts of one milestone (the status read model's row,
    ``projections.status.StatusRow``, is one; the domain does not import it)."""

    __struct_fields__: ClassVar[tuple[str, ...]]

    @property
    def milestone_id(self) -> str: ...
    @property
    def due(self) -> dt.date: ...
    @property
    def planned_on(self) -> dt.date: ...
    @property
    def work_start(self) -> dt.date | None: ...
    @property
    def achieved_at(self) -> dt.datetime | None: ...
    @property
    def cancelled(self) -> bool: ...
    @property
    def missed(self) -> bool: ...
    @property
    def tasks(self) -> Mapping[str, bool]: ...
    @property
    def task_dues(self) -> Mapping[str, dt.date]: ...
    @property
    def tasks_total(self) -> int: ...
    @property
    def tasks_done(self) -> int: ...
    @property
    def progress(self) -> int: ...
    @property
    def predecessors(self) -> Mapping[str, int]: ...
    @property
    def ord(self) -> int: ...
    @property
    def tasks_done_on(self) -> Mapping[str, dt.date]: ...


HEALTH = ("on_track", "at_risk", "late", "missed", "achieved", "cancelled")


class Blocker(msgspec.Struct, kw_only=True):
    milestone_id: str
    lag_days: int
    expected_finish: dt.date
    health: str


class Judgement(msgspec.Struct, kw_only=True):
    health: str
    reasons: list[str]
    expected_finish: dt.date
    blocked_by: list[Blocker]
    # from the pace of work (services.domain.forecast), for an open milestone with a pace
    forecast: dt.date | None = None
    forecast_low: dt.date | None = None
    forecast_high: dt.date | None = None
    forecast_basis: str | None = None
    # slack before the project's finish moves (services.domain.critical_path); None: achieved
    # or cancelled
    float_days: int | None = None
    critical: bool = False
    drives: str | None = None  # the final milestone a slip beyond the float moves
    early_finish: dt.date | None = None  # the critical path's forward pass
    late_finish: dt.date | None = None  # and backward pass
    rank: int = 0  # place in the critical path's order (predecessors first)


def _days(n: int) -> str:
    return f"{n} day{'s' if abs(n) != 1 else ''}"


def judge(
    rows: Iterable[MilestoneFacts],
    today: dt.date,
    gap: int = DEFAULT_GAP,
    target: dt.date | None = None,
) -> dict[str, Judgement]:
    """Every row of one project, judged as of ``today`` (``target``: the project's target
    finish, which the floats are measured against). Predecessors outside ``rows`` are
    ignored."""
    return assess(rows, today, gap, target)[0]


def assess(
    rows: Iterable[MilestoneFacts],
    today: dt.date,
    gap: int = DEFAULT_GAP,
    target: dt.date | None = None,
) -> tuple[dict[str, Judgement], CriticalPath]:
    """``judge``, with the project's critical path the floats came from."""
    by_id = {r.milestone_id: r for r in rows}
    out: dict[str, Judgement] = {}

    def preds_of(mid: str) -> list[tuple[str, int]]:
        return [
            (p, lag)
            for p, lag in sorted(by_id[mid].predecessors.items())
            if p in by_id and p != mid and not by_id[p].cancelled
        ]

    # predecessors first, iteratively (a chain may be longer than Python's recursion limit); the
    # graph is acyclic (DependencyAdded refuses cycles), and a cycle in bad data is cut, not looped
    for root in by_id:
        stack: list[tuple[str, bool]] = [(root, False)]
        on_path: set[str] = set()
        while stack:
            mid, expanded = stack.pop()
            if mid in out:
                continue
            if expanded:
                on_path.discard(mid)
                out[mid] = _judge(
                    by_id[mid],
                    today,
                    gap,
                    [(p, lag, out[p]) for p, lag in preds_of(mid) if p in out],
                )
                continue
            on_path.add(mid)
            stack.append((mid, True))
            stack.extend((p, False) for p, _ in preds_of(mid) if p not in out and p not in on_path)
    return out, _outlook(by_id, out, today, target)


def _basis(f: Forecast) -> str:
    """What a forecast rests on, in words."""
    if f.basis == "pace":
        return f"{f.work_ahead} open task(s) ahead at {f.pace_per_week} tasks/week"
    if f.basis.startswith("predecessor "):
        return f"after {f.basis}, at {f.pace_per_week} tasks/week"
    return f.basis  # "no open tasks", or "no pace: ..."


def _outlook(
    by_id: Mapping[str, MilestoneFacts],
    out: dict[str, Judgement],
    today: dt.date,
    target: dt.date | None,
) -> CriticalPath:
    """Rule 6 (the README's rule 5) and what it reads: each open milestone's forecast from the
    pace of work, every milestone's float against the project's finish, and ``at_risk`` for a
    milestone that still fits its due date by the rules before but whose forecast does not."""
    live = [r for r in by_id.values() if not r.cancelled]
    work = [
        Work(
            milestone_id=r.milestone_id,
            due=r.due,
            order=r.ord,
            open_tasks=r.tasks_total - r.tasks_done,
            predecessors=dict(r.predecessors),
            achieved_on=utc_date(r.achieved_at) if r.achieved_at is not None else None,
            cancelled=r.cancelled,
            expected_finish=out[r.milestone_id].expected_finish,
            has_tasks=r.tasks_total > 0,
        )
        for r in live
    ]
    done_on = [day for r in by_id.values() for day in r.tasks_done_on.values()]
    forecasts = forecast(work, done_on, today)
    for mid, f in forecasts.items():
        j = out[mid]
        j.forecast, j.forecast_low, j.forecast_high = f.forecast, f.low, f.high
        j.forecast_basis = _basis(f)
    nodes = []
    for r in live:
        j = out[r.milestone_id]
        # no earlier than the plan allows: a forecast earlier than the plan does not pull a
        # promised date in, a later one pushes it out
        earliest = j.expected_finish
        if j.forecast is not None and r.achieved_at is None:
            earliest = max(earliest, j.forecast)
        nodes.append(
            Node(
                milestone_id=r.milestone_id,
                due=r.due,
                earliest=earliest,
                predecessors=dict(r.predecessors),
                done=r.achieved_at is not None,
            )
        )
    path = critical_path(nodes, target)
    done = {r.milestone_id for r in live if r.achieved_at is not None}
    for rank, slack in enumerate(path.milestones):
        j = out[slack.milestone_id]
        j.rank = rank
        if slack.milestone_id in done:
            continue  # its date is a fact: nothing is left to slip
        j.float_days, j.critical, j.drives = slack.float_days, slack.critical, slack.drives
        j.early_finish, j.late_finish = slack.early_finish, slack.late_finish
    for r in live:
        j = out[r.milestone_id]
        if j.health not in ("on_track", "at_risk") or j.forecast is None or j.forecast <= r.due:
            continue
        reasons = [
            f"forecast {j.forecast.isoformat()} from the pace of work ({j.forecast_basis}) is "
            f"{_days((j.forecast - r.due).days)} after its due date {r.due.isoformat()}"
        ]
        if (
            j.float_days is not None
            and j.float_days < 0
            and j.drives is not None
            and path.finish is not None
        ):
            # a final milestone's late finish is the project's finish: through this one it can
            # finish no earlier than that plus the days of float missing
            behind = -j.float_days
            then = add_days(path.finish, behind).isoformat()
            who = "it" if j.drives == r.milestone_id else f"final milestone {j.drives}"
            reasons.append(
                f"the slip exceeds its float: through it, {who} can finish {then} at the "
                f"earliest, {_days(behind)} after the project's finish {path.finish.isoformat()}"
            )
        if j.health == "on_track":
            j.health, j.reasons = "at_risk", reasons
        else:
            j.reasons = j.reasons + reasons
    return path


def _judge(
    row: MilestoneFacts, today: dt.date, gap: int, preds: list[tuple[str, int, Judgement]]
) -> Judgement:
    blocked = [
        Blocker(milestone_id=p, lag_days=lag, expected_finish=j.expected_finish, health=j.health)
        for p, lag, j in preds
        if j.health != "achieved"
    ]
    if row.achieved_at is not None:
        on = utc_date(row.achieved_at)
        late = (on - row.due).days
        reason = f"achieved {on.isoformat()}" + (
            f", {_days(late)} after its due date" if late > 0 else ""
        )
        return Judgement(health="achieved", reasons=[reason], expected_finish=on, blocked_by=[])
    if row.cancelled:
        return Judgement(
            health="cancelled", reasons=["cancelled"], expected_finish=row.due, blocked_by=[]
        )

    # the expected finish, and why
    finish, drivers = row.due, []
    for task, due in sorted(row.task_dues.items()):
        if not row.tasks.get(task, False) and due > row.due:
            drivers.append((due, f"open task {task} is due {due.isoformat()}"))
    for p, lag, j in preds:
        earliest = add_days(j.expected_finish, lag)
        if earliest > row.due:
            lag_text = f" + {_days(lag)} lag" if lag else ""
            drivers.append(
                (
                    earliest,
                    f"predecessor {p} ({j.health}) finishes {j.expected_finish.isoformat()}"
                    f"{lag_text}: {earliest.isoformat()} at the earliest",
                )
            )
    if drivers:
        finish = max(d for d, _ in drivers)

    open_tasks = row.tasks_total - row.tasks_done
    if row.missed or today > row.due:
        overdue = (today - row.due).days
        reason = (
            f"due {row.due.isoformat()} passed"
            + (f" {_days(overdue)} ago" if overdue > 0 else "")
            + f" without achievement, {open_tasks} of {row.tasks_total} tasks open"
        )
        return Judgement(
            health="missed",
            reasons=[reason],
            expected_finish=max(finish, today),
            blocked_by=blocked,
        )
    if finish > row.due:
        reasons = [
            f"expected to finish {finish.isoformat()}, "
            f"{_days((finish - row.due).days)} after its due date {row.due.isoformat()}"
        ] + [text for _, text in sorted(drivers, reverse=True)]
        return Judgement(health="late", reasons=reasons, expected_finish=finish, blocked_by=blocked)

    reasons = []
    for p, _lag, j in preds:
        if j.health in ("late", "missed"):
            reasons.append(
                f"predecessor {p} is {j.health} (expected {j.expected_finish.isoformat()})"
            )
    start = row.work_start or row.planned_on
    if row.tasks_total and row.due > start:
        elapsed = min(100, max(0, 100 * (today - start).days // (row.due - start).days))
        if elapsed - row.progress >= gap:
            reasons.append(
                f"{elapsed}% of the time to {row.due.isoformat()} has passed "
                f"but {row.progress}% of tasks are done "
                f"({open_tasks} open; at risk from {gap} points behind)"
            )
    if reasons:
        return Judgement(
            health="at_risk", reasons=reasons, expected_finish=finish, blocked_by=blocked
        )
    return Judgement(
        health="on_track",
        reasons=[
            f"due {row.due.isoformat()} in {_days((row.due - today).days)}, "
            f"{row.progress}% of tasks done"
        ],
        expected_finish=finish,
        blocked_by=blocked,
    )


def present(row: MilestoneFacts, verdict: Judgement) -> dict[str, Any]:
    """A status row as the API shows it: its facts, then its health with the reasons."""
    out = {name: getattr(row, name) for name in row.__struct_fields__}
    out["order"] = out.pop("ord")
    out.update(
        health=verdict.health,
        health_reasons=verdict.reasons,
        expected_finish=verdict.expected_finish,
        blocked_by=verdict.blocked_by,
        forecast=verdict.forecast,
        forecast_low=verdict.forecast_low,
        forecast_high=verdict.forecast_high,
        forecast_basis=verdict.forecast_basis,
        float_days=verdict.float_days,
        critical=verdict.critical,
    )
    return out


def judged(
    rows: Sequence[MilestoneFacts],
    today: dt.date,
    gap: int = DEFAULT_GAP,
    target: dt.date | None = None,
) -> list[dict]:
    verdicts = judge(rows, today, gap, target)
    return [present(r, verdicts[r.milestone_id]) for r in rows]


def summary(milestones: list[dict]) -> dict:
    """A project at a glance, from its judged rows: how many milestones, how many of each
    health, the next open one, and when the last one that is not cancelled should finish."""
    open_ = sorted(
        (m for m in milestones if m["health"] not in ("achieved", "cancelled")),
        key=lambda m: m["due"],
    )
    counts: dict[str, int] = {}
    for m in milestones:
        counts[m["health"]] = counts.get(m["health"], 0) + 1
    return {
        "milestones": len(milestones),
        "by_health": counts,
        "next_milestone": {k: open_[0][k] for k in ("milestone_id", "name", "due", "health")}
        if open_
        else None,
        "expected_finish": max(
            (m["expected_finish"] for m in milestones if m["health"] != "cancelled"), default=None
        ),
    }
