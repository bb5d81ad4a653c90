"""An MSPDI plan as Milestones events, given what the project already holds. Pure.

- summary tasks are phases (a milestone's phase is its innermost summary task);
- milestone tasks (the Milestone flag, or a zero duration) are milestones, due on their Finish
  date, kind from the custom field aliased ``kind_alias`` (``event`` when empty);
- the ordinary tasks that lead to a milestone inside its phase (its predecessors, transitively
  through ordinary tasks) are its tasks;
- links between milestones, directly or through chains of ordinary tasks, are dependencies.
  A lag is the sum along the chain of each link's lag and each task's duration; working time
  becomes calendar days ×7/5 (a five-day week), elapsed time 1:1 (a day is 1,440 minutes); the
  total is rounded half away from zero; several chains: the longest. Percentage lags are
  refused. SS, FF and SF links are taken as finish-to-start with the same lag, with a warning.

CloudEvent ids are a hash of the project, the milestone id, the field and the value, so the
same file imported twice sends the same ids (the intake appends nothing for a repeat), and
only what differs from ``Current`` is sent at all. A reschedule's value includes how many
reschedules the milestone had, so moving it back and forth is a reschedule each time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterable

import msgspec

from events import (
    BaselineSet,
    DependencyAdded,
    MilestoneAchieved,
    MilestoneCancelled,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    TaskAdded,
)
from events.bounds import CLOCK_SKEW, DATE_MAX, DATE_MIN, LAG_MAX, LAG_MIN
from events.common import Event
from services.plans.mspdi import (
    ELAPSED_FORMATS,
    FS,
    PERCENT_FORMATS,
    Plan,
    PlanError,
    Task,
)

ID_ALIAS = "Milestones id"  # the text custom field the export writes each id into
KIND_ALIAS = "Milestone kind"
RESCHEDULE_REASON = "plan import"
CANCEL_REASON = "removed from the plan (plan import)"
KINDS = ("time", "event", "technical")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
WORKING_TO_CALENDAR = 7 / 5
ELAPSED_MINUTES_PER_DAY = 1440


class CurrentMilestone(msgspec.Struct, frozen=True, kw_only=True):
    due: dt.date
    closed: bool = False  # achieved or cancelled: takes no change
    achieved: bool = False
    tasks: frozenset[str] = frozenset()
    predecessors: dict[str, int] = {}
    reschedules: int = 0


class Current(msgspec.Struct, frozen=True, kw_only=True):
    """What the project holds before the import (``services.plans.current`` folds the log)."""

    exists: bool = False
    milestones: dict[str, CurrentMilestone] = {}
    baselines: frozenset[str] = frozenset()
    # whether ``tasks`` and ``predecessors`` are known (the log), or not (the report): unknown,
    # the file's are sent again with the same ids, and a repeat appends nothing
    complete: bool = True


class Outgoing(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # the CloudEvent id
    event: Event


class Imported(msgspec.Struct, frozen=True, kw_only=True):
    events: list[Outgoing]
    warnings: list[str]
    removed: list[str]  # milestones the project has and the file no longer does


def event_id(project_id: str, key: str, field: str, value: str) -> str:
    digest = hashlib.sha256("\x1f".join((project_id, key, field, value)).encode()).hexdigest()
    return f"plan-{digest[:40]}"


def calendar_days(days: float) -> int:
    """Rounded half away from zero: 2.5 -> 3, -2.5 -> -3."""
    return int(math.copysign(math.floor(abs(days) + 0.5), days))


def _clean(text: str, fallback: str) -> str:
    text = " ".join(_CONTROL.sub(" ", text).split())[:200]
    return text or fallback


def _date(task: Task, value: dt.datetime | None, field: str) -> dt.date:
    if value is None:
        raise PlanError(f"task UID {task.uid} ({task.name!r}) has no {field}")
    if not DATE_MIN <= value.date() <= DATE_MAX:
        raise PlanError(
            f"task UID {task.uid} ({task.name!r}): {field} {value.date()} is out of range: "
            f"dates from {DATE_MIN} to {DATE_MAX}"
        )
    return value.date()


class _Graph:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tasks = {t.uid: t for t in plan.tasks if not (t.summary and t.outline_level == 0)}
        self.phase: dict[int, str | None] = {}
        stack: list[tuple[int, str]] = []
        for t in plan.tasks:
            if t.uid not in self.tasks:
                continue
            while stack and stack[-1][0] >= t.outline_level:
                stack.pop()
            self.phase[t.uid] = stack[-1][1] if stack else None
            if t.summary:
                stack.append((t.outline_level, _clean(t.name, f"phase {t.uid}")))
        for t in self.tasks.values():
            for link in t.links:
                if link.predecessor_uid not in self.tasks:
                    raise PlanError(
                        f"task UID {t.uid} ({t.name!r}) follows task UID "
                        f"{link.predecessor_uid}, which the file does not have"
                    )
                if link.lag_format in PERCENT_FORMATS:
                    raise PlanError(
                        f"task UID {t.uid} ({t.name!r}): the lag after task UID "
                        f"{link.predecessor_uid} is a percentage; Milestones counts lags in days:"
                        " give it in days (d or ed)"
                    )
        self._check_acyclic()

    def is_milestone(self, t: Task) -> bool:
        return not t.summary and (t.milestone or t.duration_minutes == 0)

    def link_days(self, tenths: int, fmt: int) -> float:
        minutes = tenths / 10
        if fmt in ELAPSED_FORMATS:
            return minutes / ELAPSED_MINUTES_PER_DAY
        return minutes / self.plan.minutes_per_day * WORKING_TO_CALENDAR

    def task_days(self, t: Task) -> float:
        return (t.duration_minutes or 0) / self.plan.minutes_per_day * WORKING_TO_CALENDAR

    def _check_acyclic(self) -> None:
        state: dict[int, int] = {}  # 1: on the path, 2: done
        for start in self.tasks:
            if state.get(start):
                continue
            path: list[int] = []
            stack: list[tuple[int, bool]] = [(start, False)]
            while stack:
                uid, leaving = stack.pop()
                if leaving:
                    state[uid] = 2
                    path.pop()
                    continue
                if state.get(uid) == 2:
                    continue
                state[uid] = 1
                path.append(uid)
                stack.append((uid, True))
                for link in self.tasks[uid].links:
                    pred = link.predecessor_uid
                    if state.get(pred) == 1:
                        loop = path[path.index(pred) :] + [pred]
                        raise PlanError(
                            "the links form a cycle: task UIDs "
                            + " -> ".join(str(u) for u in reversed(loop))
                        )
                    if not state.get(pred):
                        stack.append((pred, False))

    def reach(self, uid: int, memo: dict[int, dict[int, tuple[float, bool]]]) -> dict:
        """Milestones behind ``uid``'s links, through ordinary tasks: {milestone UID: (days
        from that milestone's finish to ``uid``'s finish, longest; whether a link was not FS)}.
        Iterative, predecessors first: a chain of tasks may be longer than Python's recursion
        limit (the links are acyclic: checked before)."""
        stack = [(uid, False)]
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            behind = [
                link.predecessor_uid
                for link in self.tasks[node].links
                if self._ordinary(self.tasks[link.predecessor_uid])
                and link.predecessor_uid not in memo
            ]
            if behind and not ready:
                stack.append((node, True))
                stack.extend((b, False) for b in behind)
                continue
            memo[node] = self._reach_one(node, memo)
        return memo[uid]

    def _ordinary(self, t: Task) -> bool:
        return not t.summary and not self.is_milestone(t)

    def _reach_one(self, uid: int, memo: dict[int, dict[int, tuple[float, bool]]]) -> dict:
        out: dict[int, tuple[float, bool]] = {}
        for link in self.tasks[uid].links:
            pred = self.tasks[link.predecessor_uid]
            days = self.link_days(link.lag_tenths, link.lag_format)
            odd = link.type != FS
            if pred.summary:
                continue  # a link to a whole phase: not a milestone's
            if self.is_milestone(pred):
                found = {pred.uid: (days, odd)}
            else:
                extra = days + self.task_days(pred)
                found = {m: (d + extra, o or odd) for m, (d, o) in memo[pred.uid].items()}
            for m, (d, o) in found.items():
                if m not in out or d > out[m][0]:
                    out[m] = (d, o or (out[m][1] if m in out else False))
        return out

    def lead_tasks(self, uid: int) -> list[Task]:
        """Ordinary tasks of the milestone's phase that lead to it, nearest first."""
        phase = self.phase[uid]
        seen: set[int] = set()
        found: list[Task] = []
        frontier = [uid]
        while frontier:
            nxt: list[int] = []
            for u in frontier:
                for link in self.tasks[u].links:
                    pred = self.tasks[link.predecessor_uid]
                    if pred.uid in seen or pred.summary or self.is_milestone(pred):
                        continue
                    if self.phase[pred.uid] != phase:
                        continue
                    seen.add(pred.uid)
                    found.append(pred)
                    nxt.append(pred.uid)
            frontier = nxt
        return found


def _ids(plan: Plan, tasks: Iterable[Task]) -> dict[int, str]:
    field = plan.field_id(ID_ALIAS)
    ids: dict[int, str] = {}
    for t in tasks:
        written = t.extended.get(field) if field is not None else None
        ids[t.uid] = written if written and _ID.match(written) else f"uid-{t.uid}"
    return ids


class _Import:
    """One import's working state: the graph, the ids, and the events found so far."""

    def __init__(self, plan: Plan, project_id: str, current: Current, kind_alias: str) -> None:
        self.graph = _Graph(plan)
        self.ids = _ids(plan, self.graph.tasks.values())
        self.milestones = [t for t in self.graph.tasks.values() if self.graph.is_milestone(t)]
        mids = [self.ids[m.uid] for m in self.milestones]
        if len(set(mids)) != len(mids):
            dup = next(i for i in mids if mids.count(i) > 1)
            raise PlanError(f"two milestones have the id {dup} ({ID_ALIAS!r}): ids are unique")
        self.plan, self.project_id, self.current = plan, project_id, current
        self.kind_alias, self.kind_field = kind_alias, plan.field_id(kind_alias)
        self.warnings: list[str] = []
        self.out: list[Outgoing] = []

    def emit(self, key: str, field: str, value: str, event: Event) -> None:
        self.out.append(Outgoing(id=event_id(self.project_id, key, field, value), event=event))

    def kind(self, m: Task, mid: str) -> str:
        value = m.extended.get(self.kind_field, "") if self.kind_field is not None else ""
        kind = value.strip().lower()
        if kind and kind not in KINDS:
            self.warnings.append(
                f"milestone {mid}: {self.kind_alias} {value!r} is not time, event or technical:"
                " imported as event"
            )
        return kind if kind in KINDS else "event"

    def milestone(self, m: Task) -> None:
        mid, due = self.ids[m.uid], _date(m, m.finish, "Finish")
        have = self.current.milestones.get(mid)
        if have is None:
            planned = MilestonePlanned(
                project_id=self.project_id,
                milestone_id=mid,
                name=_clean(m.name, mid),
                kind=self.kind(m, mid),  # type: ignore[arg-type]
                due=due,
                phase=self.graph.phase[m.uid],
                order=m.id or 0,
            )
            self.emit(mid, "planned", due.isoformat(), planned)
        elif have.due != due and have.closed:
            self.warnings.append(f"milestone {mid} is closed: its Finish {due} is not imported")
        elif have.due != due:
            moved = MilestoneRescheduled(
                project_id=self.project_id, milestone_id=mid, new_due=due, reason=RESCHEDULE_REASON
            )
            self.emit(mid, "due", f"{have.reschedules}:{due.isoformat()}", moved)
        self.tasks(m, mid, have)

    def tasks(self, m: Task, mid: str, have: CurrentMilestone | None) -> None:
        known = have.tasks if have is not None else frozenset()
        for t in self.graph.lead_tasks(m.uid):
            tid = self.ids[t.uid]
            if tid in known:
                continue
            if have is not None and have.closed:
                if self.current.complete:
                    self.warnings.append(f"milestone {mid} is closed: task {tid} is not imported")
                continue
            added = TaskAdded(
                project_id=self.project_id,
                milestone_id=mid,
                task_id=tid,
                title=_clean(t.name, tid),
                start=_date(t, t.start, "Start") if t.start else None,
                due=_date(t, t.finish, "Finish") if t.finish else None,
            )
            self.emit(mid, "task", tid, added)

    def dependencies(self, m: Task, memo: dict[int, dict[int, tuple[float, bool]]]) -> None:
        mid = self.ids[m.uid]
        have = self.current.milestones.get(mid)
        for pred_uid, (days, odd) in sorted(self.graph.reach(m.uid, memo).items()):
            pid, lag = self.ids[pred_uid], calendar_days(days)
            if odd:
                self.warnings.append(
                    f"{mid} after {pid}: an SS, FF or SF link on the way is taken as "
                    f"finish-to-start, lag {lag} days"
                )
            if not LAG_MIN <= lag <= LAG_MAX:
                raise PlanError(
                    f"milestone {mid} follows {pid} with a lag of {lag} days: "
                    f"lags from {LAG_MIN} to {LAG_MAX} days"
                )
            if have is not None and have.predecessors.get(pid) == lag:
                continue
            added = DependencyAdded(
                project_id=self.project_id, milestone_id=mid, depends_on=pid, lag_days=lag
            )
            self.emit(mid, "depends_on", f"{pid}:{lag}", added)

    def baselines(self) -> None:
        found: dict[int, dict[str, dt.date]] = {}
        for m in self.milestones:
            for b in m.baselines:
                if b.finish is not None:
                    when = _date(m, b.finish, f"Baseline {b.number} Finish")
                    found.setdefault(b.number, {})[self.ids[m.uid]] = when
        for number, planned in sorted(found.items()):
            name = baseline_name(number)
            if name not in self.current.baselines:
                baseline = BaselineSet(project_id=self.project_id, name=name, planned=planned)
                self.emit("", "baseline", name, baseline)

    def achieved(self, m: Task, now: dt.datetime) -> None:
        mid = self.ids[m.uid]
        have = self.current.milestones.get(mid)
        if m.actual_finish is None or (have is not None and have.closed):
            return
        _date(m, m.actual_finish, "ActualFinish")
        at = m.actual_finish
        at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at  # MSPDI times: taken as UTC
        if at > now + CLOCK_SKEW:
            raise PlanError(f"milestone {mid}: ActualFinish {at.isoformat()} is in the future")
        done = MilestoneAchieved(project_id=self.project_id, milestone_id=mid, achieved_at=at)
        self.emit(mid, "achieved", at.isoformat(), done)


def baseline_name(number: int) -> str:
    """MS Project's names: Baseline, Baseline 1, ..., Baseline 10."""
    return "Baseline" if number == 0 else f"Baseline {number}"


def import_plan(
    plan: Plan,
    project_id: str,
    current: Current,
    now: dt.datetime,
    *,
    kind_alias: str = KIND_ALIAS,
    cancel_removed: bool = False,
) -> Imported:
    """The events that bring the project from ``current`` to ``plan``, in an order the deciders
    accept: the project, milestones with their tasks and reschedules, dependencies, baselines,
    achievements, and (``cancel_removed``) cancellations."""
    run = _Import(plan, project_id, current, kind_alias)
    if not current.exists:
        created = ProjectCreated(project_id=project_id, name=_clean(plan.name or "", project_id))
        run.emit("", "project", "created", created)
    for m in run.milestones:
        run.milestone(m)
    memo: dict[int, dict[int, tuple[float, bool]]] = {}
    for m in run.milestones:
        run.dependencies(m, memo)
    run.baselines()
    for m in run.milestones:
        run.achieved(m, now)
    in_file = {run.ids[m.uid] for m in run.milestones}
    removed = sorted(
        mid for mid, have in current.milestones.items() if mid not in in_file and not have.closed
    )
    if cancel_removed:
        for mid in removed:
            gone = MilestoneCancelled(project_id=project_id, milestone_id=mid, reason=CANCEL_REASON)
            run.emit(mid, "cancelled", "", gone)
    return Imported(events=run.out, warnings=run.warnings, removed=removed)
