"""Events of the milestone aggregate, stored on
``milestones.events.<project_id>.<milestone_id>``."""

from __future__ import annotations

from events.common import (
    ApproverName,
    CheckResult,
    Date,
    Id,
    Int32,
    LagDays,
    MilestoneEvent,
    MilestoneKind,
    Name,
    Reason,
    Text,
    Timestamp,
)


class MilestonePlanned(MilestoneEvent, frozen=True, kw_only=True):
    name: Name
    kind: MilestoneKind
    due: Date
    phase: Name | None = None
    order: Int32 = 0
    success_criteria: Text | None = None
    # a decision gate: achieved only with the sign-off of these principals (README "Decision
    # gates"); approvals_needed None: every approver
    approvers: list[ApproverName] = []
    approvals_needed: Int32 | None = None


class TaskAdded(MilestoneEvent, frozen=True, kw_only=True):
    task_id: Id
    title: Name
    start: Date | None = None
    due: Date | None = None
    check: Text | None = None  # technical milestones: the check that must pass


class TaskCompleted(MilestoneEvent, frozen=True, kw_only=True):
    task_id: Id
    completed_at: Timestamp | None = None  # the CloudEvent time when absent
    result: CheckResult | None = None  # a "failed" check keeps the task open


class TaskReopened(MilestoneEvent, frozen=True, kw_only=True):
    task_id: Id
    reason: Text | None = None


class MilestoneRescheduled(MilestoneEvent, frozen=True, kw_only=True):
    new_due: Date
    reason: Reason
    old_due: Date | None = None  # filled in by the service from the milestone's state


class MilestoneAchieved(MilestoneEvent, frozen=True, kw_only=True):
    achieved_at: Timestamp | None = None  # the CloudEvent time when absent
    evidence: Text | None = None


class MilestoneCancelled(MilestoneEvent, frozen=True, kw_only=True):
    reason: Reason


class DeadlineReached(MilestoneEvent, frozen=True, kw_only=True):
    """Time passing, as an event: the milestone's due date has arrived. Appended by the scheduler
    (a JetStream message schedule fires it into the inbox) or sent by any clock service. ``due``
    names the deadline that arrived; one that a reschedule has replaced changes nothing."""

    due: Date
    reached_at: Timestamp | None = None  # the CloudEvent time when absent


class MilestoneMissed(MilestoneEvent, frozen=True, kw_only=True):
    """Derived: the deadline arrived and the milestone was not achieved (with what was open)."""

    due: Date
    open_tasks: list[Id] = []
    awaiting_approval: bool = False  # a gate whose tasks were done, its sign-off incomplete


class DependencyViolated(MilestoneEvent, frozen=True, kw_only=True):
    """Derived: this milestone (a successor) is now due before its predecessor ``depends_on``
    allows: the predecessor's finish (its due date, or the day it was achieved) plus the lag
    falls after this milestone's due date. Emitted when the predecessor moves, when this
    milestone moves too early, or when the dependency is added; under the ``shift`` policy the
    successor is rescheduled instead (a ``MilestoneRescheduled`` caused by the move)."""

    depends_on: Id
    predecessor_finish: Date
    lag_days: LagDays = 0
    due: Date  # this milestone's due date
    earliest: Date  # the first date the dependency allows: predecessor_finish + lag_days


class ApproversSet(MilestoneEvent, frozen=True, kw_only=True):
    """Make a planned milestone a decision gate, change its approvers, or (an empty list) make
    it an ordinary milestone again. Approvals given by principals no longer listed are cleared."""

    approvers: list[ApproverName]
    approvals_needed: Int32 | None = None  # None: every approver
    set_at: Timestamp | None = None  # the CloudEvent time when absent


class ApprovalRequested(MilestoneEvent, frozen=True, kw_only=True):
    """Derived: a gate's tasks are done; it waits for the sign-off of its approvers."""

    approvers: list[ApproverName]
    approvals_needed: Int32
    pending: list[ApproverName] = []  # approvers who have not approved yet


class MilestoneApproved(MilestoneEvent, frozen=True, kw_only=True):
    """A gate's approver signs off. ``approver`` is who the sender is authenticated as: the
    intake fills it in (a message naming anyone else is refused ``forbidden``)."""

    meaning: Reason  # what the signature means, e.g. "approved for launch"
    reason: Text | None = None
    approver: ApproverName | None = None
    approved_at: Timestamp | None = None  # the CloudEvent time when absent


class MilestoneApprovalRejected(MilestoneEvent, frozen=True, kw_only=True):
    """A gate's approver refuses sign-off: the approvals given so far are cleared and the gate
    is reopened with the reason (approvers may approve again after fixes)."""

    reason: Reason
    meaning: Text | None = None
    approver: ApproverName | None = None
    rejected_at: Timestamp | None = None  # the CloudEvent time when absent


MILESTONE_EVENTS = (
    MilestonePlanned,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
    MilestoneRescheduled,
    MilestoneAchieved,
    MilestoneCancelled,
    DeadlineReached,
    MilestoneMissed,
    DependencyViolated,
    ApproversSet,
    ApprovalRequested,
    MilestoneApproved,
    MilestoneApprovalRejected,
)
