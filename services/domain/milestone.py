"""The milestone aggregate: state, ``evolve`` and ``decide``. Pure: no I/O, no clock.

Achievement rules by kind (documented in the README):
- ``event``: achieved by a reported ``MilestoneAchieved`` or when its last open task completes.
- ``technical``: achieved when every task is complete and every task that carries a check
  has reported ``result: passed``; a ``failed`` result is recorded and keeps the task open.
- ``time``: judged when its date arrives (``DeadlineReached``): achieved then if no task is
  open (and every check passed), ``MilestoneMissed`` otherwise. Completing tasks does not
  achieve it early, but a reported ``MilestoneAchieved`` does. When it was missed only because
  the report of its last task arrived after the deadline (``completed_at`` before it), that
  report achieves it, on the day the work was done.
- any kind: a ``DeadlineReached`` for its current due date while it is not achieved records
  ``MilestoneMissed``; it can still be achieved (late) or rescheduled afterwards. A deadline
  for a date a reschedule replaced, or for a closed milestone, changes nothing.
- a decision gate (``approvers`` named; ``services.domain.gate``): when the kind's task rule is
  met it records ``ApprovalRequested`` instead of ``MilestoneAchieved``; the last needed
  ``MilestoneApproved`` achieves it (a ``time`` gate is judged at its deadline; once missed, the
  last approval achieves it late); a rejection clears the approvals; a task reopened or added
  clears the approvals and the request. (The gate's own state and checks: ``gate``; its
  decisions are here because they read the milestone's tasks and kind.)

An achieved milestone still records late ``TaskCompleted`` reports (bookkeeping), and refuses
every other change. A cancelled milestone refuses everything; repeats change nothing.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from events import (
    ApprovalRequested,
    ApproversSet,
    DeadlineReached,
    DependencyViolated,
    MilestoneAchieved,
    MilestoneApprovalRejected,
    MilestoneApproved,
    MilestoneCancelled,
    MilestoneMissed,
    MilestonePlanned,
    MilestoneRescheduled,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
    UnhandledEvent,
)
from events.common import Event, ProjectEvent
from events.errors import Rejected
from services.domain.dates import TIME_MAX, add_days
from services.domain.gate import Gate, check_approvers, signer_check


class Task(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    check: str | None = None
    done: bool = False
    last_result: str | None = None


class Milestone(msgspec.Struct, frozen=True, kw_only=True):
    project_id: str
    milestone_id: str
    planned: bool = False
    name: str = ""
    kind: str = "event"
    due: dt.date | None = None
    tasks: dict[str, Task] = {}
    achieved_at: dt.datetime | None = None
    cancelled: bool = False
    missed: bool = False  # the current due date arrived without achievement
    # predecessor -> earliest date reported by DependencyViolated
    violations: dict[str, dt.date] = {}
    gate: Gate = Gate()  # a decision gate's approvers and sign-off (inactive: none)

    @property
    def closed(self) -> bool:
        return self.cancelled or self.achieved_at is not None

    @property
    def finish(self) -> dt.date | None:
        """When it finishes, for its successors: the day it was achieved, else its due date."""
        return self.achieved_at.date() if self.achieved_at is not None else self.due

    @property
    def open_tasks(self) -> list[str]:
        return [task_id for task_id, task in self.tasks.items() if not task.done]

    @property
    def unfinished(self) -> list[str]:
        """Tasks open, or done without their check passed: what keeps a gate from sign-off."""
        return [
            t
            for t, task in self.tasks.items()
            if not task.done or (task.check is not None and task.last_result != "passed")
        ]


def deadline(due: dt.date) -> dt.datetime:
    """When a due date has passed: midnight UTC after it (a milestone is due *by the end* of its
    date). A due date of 9999-12-31 (in a log written before the intake bounded dates) never
    passes: the last instant Python can name stands for it."""
    if due == dt.date.max:
        return TIME_MAX
    return dt.datetime.combine(add_days(due, 1), dt.time(0), dt.UTC)


def initial_state(project_id: str, milestone_id: str) -> Milestone:
    return Milestone(project_id=project_id, milestone_id=milestone_id)


def _with_task(state: Milestone, task_id: str, task: Task) -> Milestone:
    return msgspec.structs.replace(state, tasks={**state.tasks, task_id: task})


def evolve(state: Milestone, event: Event) -> Milestone:
    replace = msgspec.structs.replace
    match event:
        case MilestonePlanned(name=name, kind=kind, due=due):
            gate = Gate().set(event.approvers, event.approvals_needed)
            return replace(state, planned=True, name=name, kind=kind, due=due, gate=gate)
        case TaskAdded(task_id=t, title=title, check=check):
            state = replace(state, gate=_reopened(state.gate))
            return _with_task(state, t, Task(title=title, check=check))
        case TaskCompleted(task_id=t, result=result) if t in state.tasks:
            task = state.tasks[t]
            return _with_task(state, t, replace(task, done=result != "failed", last_result=result))
        case TaskReopened(task_id=t) if t in state.tasks:
            state = replace(state, gate=_reopened(state.gate))
            return _with_task(state, t, replace(state.tasks[t], done=False))
        case TaskCompleted() | TaskReopened():
            return state  # a task it does not know (decide refuses those; old logs may have them)
        case MilestoneRescheduled(new_due=new_due):
            return replace(state, due=new_due, missed=False, violations={})
        case DependencyViolated(depends_on=d, earliest=earliest):
            return replace(state, violations={**state.violations, d: earliest})
        case MilestoneMissed():
            return replace(state, missed=True)
        case MilestoneAchieved(achieved_at=at):
            return replace(state, achieved_at=at)
        case MilestoneCancelled():
            return replace(state, cancelled=True)
        case DeadlineReached():
            return state  # what it meant follows as its own event (achieved or missed)
        case (
            ApproversSet() | ApprovalRequested() | MilestoneApproved() | MilestoneApprovalRejected()
        ):
            return replace(state, gate=_signed_off(state.gate, event))
        case ProjectEvent():
            return state  # the project's fact, not this milestone's
    raise UnhandledEvent(type(event).__name__, "the milestone's evolve")


def _signed_off(
    gate: Gate,
    event: ApproversSet | ApprovalRequested | MilestoneApproved | MilestoneApprovalRejected,
) -> Gate:
    match event:
        case ApproversSet(approvers=approvers, approvals_needed=needed):
            return gate.set(approvers, needed)
        case ApprovalRequested():
            return msgspec.structs.replace(gate, requested=True)
        case MilestoneApproved(approver=who, approved_at=at, meaning=meaning) if who is not None:
            return gate.approve(who, at, meaning)
        case MilestoneApprovalRejected():
            return msgspec.structs.replace(gate, approvals={})
    return gate  # an approval without an approver: decide refuses those


def _reopened(gate: Gate) -> Gate:
    return gate.cleared() if gate.active else gate


def _not_planned(state: Milestone) -> Rejected:
    return Rejected(
        "not_found",
        f"milestone {state.milestone_id} of project {state.project_id} is not planned: "
        "send MilestonePlanned first",
    )


def _closed(state: Milestone, what: str) -> Rejected:
    how = "cancelled" if state.cancelled else "achieved"
    return Rejected("rejected", f"milestone {state.milestone_id} is {how}: it cannot {what}")


def _unknown_task(state: Milestone, task_id: str) -> Rejected:
    return Rejected(
        "not_found",
        f"task {task_id} is not part of milestone {state.milestone_id}: send TaskAdded first",
    )


def _criteria_met(tasks: dict[str, Task]) -> bool:
    return bool(tasks) and all(
        t.done and (t.check is None or t.last_result == "passed") for t in tasks.values()
    )


def decide(msg: Event, state: Milestone, *, project_exists: bool = True) -> list[Event]:
    """Decide what a message means for this milestone. Raises ``Rejected``."""
    match msg:
        case MilestoneMissed() | DependencyViolated() | ApprovalRequested():
            raise Rejected(
                "unknown_type", f"{type(msg).__name__} is derived: only the system records it"
            )
        case ProjectEvent():
            raise Rejected("unknown_type", f"{type(msg).__name__} is a project message")
        case MilestonePlanned():
            return _plan(msg, state, project_exists)
        case _ if not state.planned:
            raise _not_planned(state)
        case TaskAdded():
            return _add_task(msg, state)
        case TaskCompleted():
            return _complete_task(msg, state)
        case TaskReopened():
            return _reopen_task(msg, state)
        case MilestoneRescheduled():
            return _reschedule(msg, state)
        case MilestoneAchieved():
            return _achieve(msg, state)
        case MilestoneCancelled():
            return _cancel(msg, state)
        case DeadlineReached():
            return _reach_deadline(msg, state)
        case ApproversSet():
            return _set_approvers(msg, state)
        case MilestoneApproved():
            return _approve(msg, state)
        case MilestoneApprovalRejected():
            return _reject_approval(msg, state)
    raise UnhandledEvent(type(msg).__name__, "the milestone's decide")


def _plan(msg: MilestonePlanned, state: Milestone, project_exists: bool) -> list[Event]:
    if not project_exists:
        raise Rejected(
            "not_found", f"project {msg.project_id} does not exist: send ProjectCreated first"
        )
    if state.planned:
        raise Rejected(
            "conflict",
            f"milestone {state.milestone_id} is already planned: "
            "use MilestoneRescheduled to change its due date",
        )
    check_approvers(msg.approvers, msg.approvals_needed, msg.milestone_id)
    after = evolve(state, msg)
    # a gate planned without tasks has nothing left to do: its approvers may sign at once
    return [msg, _request(after)] if after.gate.active else [msg]


def _add_task(msg: TaskAdded, state: Milestone) -> list[Event]:
    match msg:
        case TaskAdded() if state.closed:
            raise _closed(state, "take new tasks")
        case TaskAdded(task_id=t, title=title) if t in state.tasks:
            if state.tasks[t].title == title:
                return []
            raise Rejected("conflict", f"task {t} already exists with another title")
    return [msg]


def _complete_task(msg: TaskCompleted, state: Milestone) -> list[Event]:
    match msg:
        case TaskCompleted(task_id=t) if t not in state.tasks:
            raise _unknown_task(state, t)
        case TaskCompleted() if state.cancelled:
            raise _closed(state, "complete tasks")
        case TaskCompleted(task_id=t) if state.tasks[t].done:
            return []  # a repeat changes nothing
        case TaskCompleted(task_id=t, result=None) if state.tasks[t].check is not None:
            raise Rejected(
                "invalid",
                f"task {t} carries a check ({state.tasks[t].check}): "
                "report result 'passed' or 'failed'",
            )
    if state.gate.active:
        after = evolve(state, msg)
        ready = not state.closed and not after.unfinished and not after.gate.requested
        return [msg, _request(after)] if ready else [msg]
    achieved = _achievement(msg, state)
    return [msg] if achieved is None else [msg, achieved]


def _achievement(msg: TaskCompleted, state: Milestone) -> MilestoneAchieved | None:
    """The achievement a completed task brings about when it meets its milestone kind's rule."""
    after = evolve(state, msg)
    at = msg.completed_at
    # a time milestone missed because the report of its last task arrived after the
    # deadline, though the task was done before it: achieved when the work was done
    in_time = (
        state.kind == "time"
        and state.missed
        and state.due is not None
        and at is not None
        and at < deadline(state.due)
        and _criteria_met(after.tasks)
    )
    auto = (
        not state.closed
        and msg.result != "failed"
        and (
            (state.kind == "event" and not after.open_tasks)
            or (state.kind == "technical" and _criteria_met(after.tasks))
            or in_time
        )
    )
    if not auto:
        return None
    evidence = {"event": "all tasks completed", "technical": "all checks passed"}.get(
        state.kind, f"every task done by {state.due}, reported after the deadline"
    )
    return MilestoneAchieved(
        project_id=state.project_id,
        milestone_id=state.milestone_id,
        achieved_at=at,
        evidence=evidence,
    )


def _reopen_task(msg: TaskReopened, state: Milestone) -> list[Event]:
    if msg.task_id not in state.tasks:
        raise _unknown_task(state, msg.task_id)
    if state.closed:
        raise _closed(state, "reopen tasks")
    return [msg] if state.tasks[msg.task_id].done else []


def _reschedule(msg: MilestoneRescheduled, state: Milestone) -> list[Event]:
    if state.closed:
        raise _closed(state, "be rescheduled")
    if not msg.reason.strip():
        raise Rejected("invalid", "reason must say why the milestone moves")
    if msg.new_due == state.due:
        return []
    return [msgspec.structs.replace(msg, old_due=state.due)]


def _achieve(msg: MilestoneAchieved, state: Milestone) -> list[Event]:
    if state.cancelled:
        raise _closed(state, "be achieved")
    if state.achieved_at is not None:
        return []
    if not state.gate.complete:
        raise Rejected(
            "rejected",
            f"milestone {state.milestone_id} is a decision gate: {state.gate.missing} of "
            f"{state.gate.needed} approvals missing; its approvers sign off with "
            "MilestoneApproved (milestones approve)",
        )
    if state.kind == "technical" and not _criteria_met(state.tasks):
        pending = ", ".join(state.open_tasks) or "checks not passed"
        raise Rejected(
            "rejected",
            f"technical milestone {state.milestone_id} has unmet criteria ({pending}): "
            "complete its tasks with passing checks",
        )
    return [msg]


def _cancel(msg: MilestoneCancelled, state: Milestone) -> list[Event]:
    if state.cancelled:
        return []
    if state.achieved_at is not None:
        raise _closed(state, "be cancelled")
    return [msg]


def _reach_deadline(msg: DeadlineReached, state: Milestone) -> list[Event]:
    due = msg.due
    if state.closed or due != state.due or state.missed:
        return []  # closed, a deadline a reschedule replaced, or a repeat
    checks_passed = all(t.check is None or t.last_result == "passed" for t in state.tasks.values())
    # achieved *by* its date: on the due day itself, though the deadline fires just after it
    end_of_due = dt.datetime.combine(due, dt.time.max, dt.UTC)
    if state.kind == "time" and not state.open_tasks and checks_passed and state.gate.complete:
        achieved = MilestoneAchieved(
            project_id=state.project_id,
            milestone_id=state.milestone_id,
            achieved_at=min(msg.reached_at or end_of_due, end_of_due),
            evidence=f"every task done by {due.isoformat()}",
        )
        return [msg, achieved]
    missed = MilestoneMissed(
        project_id=state.project_id,
        milestone_id=state.milestone_id,
        due=due,
        open_tasks=state.open_tasks,
        awaiting_approval=state.gate.active and not state.unfinished,
    )
    return [msg, missed]


def _request(state: Milestone) -> ApprovalRequested:
    return ApprovalRequested(
        project_id=state.project_id,
        milestone_id=state.milestone_id,
        approvers=list(state.gate.approvers),
        approvals_needed=state.gate.needed,
        pending=state.gate.pending,
    )


def _signed(state: Milestone, at: dt.datetime | None) -> MilestoneAchieved:
    signed = [a for a in state.gate.approvers if a in state.gate.approvals]
    who = ", ".join(signed)
    meaning = "; ".join(dict.fromkeys(state.gate.approvals[a].meaning for a in signed))
    return MilestoneAchieved(
        project_id=state.project_id,
        milestone_id=state.milestone_id,
        achieved_at=at,
        evidence=f"approved by {who}: {meaning}" if meaning else f"approved by {who}",
    )


def _achieves_on_sign_off(state: Milestone) -> bool:
    """Complete sign-off achieves a gate whose tasks are done; a ``time`` gate is judged at its
    deadline, so only once that has passed (missed, achieved late)."""
    return state.gate.complete and not state.unfinished and (state.kind != "time" or state.missed)


def _set_approvers(msg: ApproversSet, state: Milestone) -> list[Event]:
    if state.closed:
        raise _closed(state, "change its approvers")
    check_approvers(msg.approvers, msg.approvals_needed, msg.milestone_id)
    gate = state.gate
    if tuple(msg.approvers) == gate.approvers and msg.approvals_needed == gate.approvals_needed:
        return []  # a repeat changes nothing
    after = evolve(state, msg)
    if not after.gate.active:
        return [msg]  # an ordinary milestone again: a report or its next task achieves it
    if after.unfinished:
        return [msg]
    if _achieves_on_sign_off(after) and after.gate.approvals:
        return [msg, _signed(after, msg.set_at)]
    return [msg, _request(after)]


def _sign_off_blocked(state: Milestone, what: str) -> None:
    if state.closed:
        raise _closed(state, what)
    if state.unfinished:
        raise Rejected(
            "rejected",
            f"milestone {state.milestone_id} has unfinished tasks "
            f"({', '.join(state.unfinished)}): sign-off follows when they are done",
        )


def _approve(msg: MilestoneApproved, state: Milestone) -> list[Event]:
    if state.closed:
        raise _closed(state, "be approved")
    who = signer_check(state.gate, msg.approver, state.milestone_id, "approval")
    if who in state.gate.approvals:
        at = state.gate.approvals[who].at
        when = f" at {at.isoformat()}" if at is not None else ""
        raise Rejected(
            "conflict",
            f"{who} already approved milestone {state.milestone_id}{when}: a principal "
            "approves once (a rejection clears the approvals)",
        )
    _sign_off_blocked(state, "be approved")
    after = evolve(state, msg)
    if _achieves_on_sign_off(after):
        return [msg, _signed(after, msg.approved_at)]
    return [msg]


def _reject_approval(msg: MilestoneApprovalRejected, state: Milestone) -> list[Event]:
    if state.closed:
        raise _closed(state, "be rejected")
    signer_check(state.gate, msg.approver, state.milestone_id, "rejection")
    _sign_off_blocked(state, "be rejected")
    return [msg]
