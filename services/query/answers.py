"""What each query answers, item by item, as msgspec Structs: the OpenAPI document's response
schemas (``services.query.openapi``) are made from these, so a generated client gets typed
models. The queries build their answers from read-model rows; these types say what those rows
hold. Unknown extra keys are allowed (a read model may grow a column), missing or mistyped ones
are not: the schemathesis test (tests/test_openapi.py) checks real answers against them.

Where the domain already has a Struct (the report, the trend, the digest), it is used as is.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from projections.status import Violation
from services.domain.health import Blocker
from services.domain.reporting import Report, Trend
from services.notify.digest import Digest


class LastStatusReport(msgspec.Struct, kw_only=True):
    """The latest StatusReported of a milestone (``projections.status.Report``)."""

    health: str
    note: str
    actor: str | None
    reported_at: dt.datetime
    position: int


class SignOffApproval(msgspec.Struct, kw_only=True):
    at: dt.datetime
    meaning: str
    reason: str | None
    principal: str | None  # the credential the approval came with


class SignOffRejection(msgspec.Struct, kw_only=True):
    by: str
    at: dt.datetime
    reason: str
    meaning: str | None
    principal: str | None


class SignOff(msgspec.Struct, kw_only=True):
    """A decision gate's sign-off (README "Decision gates")."""

    approvers: list[str]
    needed: int
    approved_by: list[str]
    pending: list[str]
    state: str  # not_requested | awaiting | rejected | approved
    requested_at: dt.datetime | None
    approvals: dict[str, SignOffApproval]
    last_rejection: SignOffRejection | None


class Milestone(msgspec.Struct, kw_only=True):
    """A milestone's status row, judged: its facts, then its health with the reasons."""

    project_id: str
    milestone_id: str
    name: str
    kind: str
    phase: str | None
    order: int
    success_criteria: str | None
    planned_on: dt.date
    work_start: dt.date | None
    due: dt.date
    first_due: dt.date
    achieved_at: dt.datetime | None
    cancelled: bool
    missed: bool
    tasks: dict[str, bool]
    task_dues: dict[str, dt.date]
    tasks_total: int
    tasks_done: int
    progress: int
    tasks_done_on: dict[str, dt.date]
    predecessors: dict[str, int]
    violations: dict[str, Violation]
    last_report: LastStatusReport | None
    reschedules: int
    last_position: int
    updated_at: dt.datetime
    health: str
    health_reasons: list[str]
    expected_finish: dt.date
    blocked_by: list[Blocker]
    forecast: dt.date | None  # from the pace of work; null: achieved, cancelled or no pace
    forecast_low: dt.date | None
    forecast_high: dt.date | None  # null: the slow pace is zero, no upper bound
    forecast_basis: str | None
    float_days: int | None  # days it may slip before the project's finish moves
    critical: bool
    sign_off: SignOff | None = None  # a decision gate's; null: an ordinary milestone


class PathMilestone(msgspec.Struct, kw_only=True):
    """One milestone on the critical path's passes."""

    milestone_id: str
    name: str
    due: dt.date
    expected_finish: dt.date
    forecast: dt.date | None
    early_finish: dt.date  # forward pass: its forecast (else expected finish) and predecessors
    late_finish: dt.date  # backward pass from the project's finish
    # late - early: negative when the finish can no longer be met; null once achieved (its date
    # is a fact: nothing is left to slip), as in the status and the report
    float_days: int | None
    critical: bool
    drives: str  # the final milestone a slip beyond its float moves
    health: str
    achieved: bool


class ProjectCriticalPath(msgspec.Struct, kw_only=True):
    """The chain that drives a project's finish, and each milestone's float."""

    project_id: str
    today: dt.date
    target: dt.date | None
    finish: dt.date | None  # the target, else the latest due date of the last milestones
    project_float_days: int | None
    chain: list[str]  # the critical milestones, predecessors first
    milestones: list[PathMilestone]


class NextMilestone(msgspec.Struct, kw_only=True):
    milestone_id: str
    name: str
    due: dt.date
    health: str


class Project(msgspec.Struct, kw_only=True):
    """A project at a glance: its goals, milestones by health, the next open one."""

    project_id: str
    name: str
    goals: Any
    dependency_policy: str
    target: dt.date | None  # ProjectTargetSet: the finish the critical path measures against
    created_at: dt.datetime
    position: int
    milestones: int
    by_health: dict[str, int]
    next_milestone: NextMilestone | None
    expected_finish: dt.date | None


class HistoryEntry(msgspec.Struct, kw_only=True):
    position: int
    project_id: str
    milestone_id: str
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    type: str
    old_due: dt.date | None
    new_due: dt.date | None
    reason: str | None
    actor: str | None
    source: str


class AuditEvent(msgspec.Struct, kw_only=True):
    """One event of the log with who sent it, where from, when and why."""

    position: int
    subject: str
    project_id: str
    milestone_id: str | None
    type: str
    event_id: str
    actor: str | None
    source: str
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    correlation_id: str
    causation_id: str
    schema_version: int
    payload: dict[str, Any]
    principal: str | None


class ReportChange(msgspec.Struct, kw_only=True):
    milestone_id: str
    then_expected_finish: dt.date | None
    now_expected_finish: dt.date
    then_state: str | None
    now_state: str
    moved_days: int | None


class ReportComparison(msgspec.Struct, kw_only=True):
    """The report with compare_as_of or compare_position: both points and what moved."""

    now: Report
    then: Report
    changes: list[ReportChange]


class DigestMade(msgspec.Struct, kw_only=True):
    digest: Digest
    queued_deliveries: int


class Attempt(msgspec.Struct, kw_only=True):
    attempt: int
    at: str
    status: int | None
    error: str | None
    ms: float | None


class Delivery(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    project_id: str
    milestone_id: str | None
    stakeholder: str
    url: str
    position: int | None
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    attempt_log: list[Attempt]


class Retried(msgspec.Struct, kw_only=True):
    id: str
    status: str


class Subscription(msgspec.Struct, kw_only=True):
    project_id: str
    milestone_id: str | None
    stakeholder: str
    url: str
    signed: bool
    position: int
    subscribed_at: dt.datetime | None


class StatusReport(msgspec.Struct, kw_only=True):
    position: int
    project_id: str
    milestone_id: str | None
    reported_at: dt.datetime
    actor: str | None
    health: str
    note: str


class Rejection(msgspec.Struct, kw_only=True):
    """An inbox message the intake refused: the reason, and the message as it arrived
    (secrets redacted)."""

    position: int
    inbox_seq: int
    subject: str
    received_at: dt.datetime
    code: str
    message: str
    payload: str | None


class ProjectionState(msgspec.Struct, kw_only=True):
    projection: str
    position: int
    pending: int
    rate: float
    updated_at: dt.datetime
    parked: int
    stream_last: int


class ParkedEvent(msgspec.Struct, kw_only=True):
    """An event a projection could not apply; ``payload`` is text where the stored bytes are
    UTF-8, ``payload_base64`` otherwise."""

    projection: str
    position: int
    subject: str
    project: str | None
    type: str | None
    error: str
    behind: int | None
    attempts: int
    parked_at: dt.datetime
    payload: str | None
    payload_base64: str | None
    headers: dict[str, Any] | None


__all__ = ["Report", "Trend"]
