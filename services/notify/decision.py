"""What to tell whom (pure): which events notify (``KINDS``), one line a person reads for an
event (``describe``), and the notifications an event makes for the matching subscriptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec

from events import StoredEvent, UnhandledEvent
from services.notify.outbox import Notification, Queued, Subscription, delivery_id

KINDS = {
    "MilestoneAchieved": "milestone.achieved",
    "MilestoneRescheduled": "milestone.rescheduled",
    "DependencyViolated": "dependency.violated",
    "MilestoneMissed": "milestone.missed",
    "ApprovalRequested": "milestone.approval_requested",
    "MilestoneApproved": "milestone.approved",
    "MilestoneApprovalRejected": "milestone.approval_rejected",
}
ALL_KINDS = (*KINDS.values(), "milestone.at_risk", "project.digest")


def _sign_off(kind: str, m: object, data: dict[str, Any]) -> str | None:
    """A decision gate's events in words (None: not one of them)."""
    match kind:
        case "ApprovalRequested":
            pending = ", ".join(data.get("pending") or []) or "nobody"
            return (
                f"{m} awaits approval: its tasks are done; {data.get('approvals_needed')} of "
                f"{', '.join(data.get('approvers') or [])} must approve (pending: {pending})"
            )
        case "MilestoneApproved":
            return f"{m} approved by {data.get('approver')}: {data.get('meaning')}" + (
                f" ({data['reason']})" if data.get("reason") else ""
            )
        case "MilestoneApprovalRejected":
            return (
                f"{m} approval rejected by {data.get('approver')}: {data.get('reason')}; "
                "the approvals given so far are cleared"
            )
        case "ApproversSet":
            names = ", ".join(data.get("approvers") or [])
            return f"{m} approvers set: {names}" if names else f"{m} is no longer a decision gate"
    return None


def describe(kind: str, data: dict[str, Any]) -> str:
    """One line a person reads: what happened to which milestone."""
    m = data.get("milestone_id")
    return _sign_off(kind, m, data) or _described(kind, m, data)


def _described(kind: str, m: object, data: dict[str, Any]) -> str:
    match kind:
        case "MilestoneRescheduled":
            moved = f"{data.get('old_due')} to {data.get('new_due')}"
            return f"{m} moved from {moved}: {data.get('reason')}"
        case "MilestoneAchieved":
            return f"{m} achieved" + (f" ({data['evidence']})" if data.get("evidence") else "")
        case "DependencyViolated":
            return (
                f"{m} (due {data.get('due')}) cannot finish before {data.get('earliest')}: "
                f"{data.get('depends_on')} finishes {data.get('predecessor_finish')}"
            )
        case "MilestoneMissed":
            open_tasks = len(data.get("open_tasks") or [])
            awaiting = "; it awaited approval" if data.get("awaiting_approval") else ""
            return (
                f"{m} missed its due date {data.get('due')} with {open_tasks} open task(s)"
                + awaiting
            )
        case "MilestonePlanned":
            return f"{m} planned for {data.get('due')} ({data.get('kind')})"
        case "TaskCompleted":
            return f"{m}: task {data.get('task_id')} completed" + (
                f" ({data['result']})" if data.get("result") else ""
            )
        case "TaskAdded":
            return f"{m}: task {data.get('task_id')} added"
        case "TaskReopened":
            return f"{m}: task {data.get('task_id')} reopened"
        case "MilestoneCancelled":
            return f"{m} cancelled: {data.get('reason')}"
        case "StatusReported":
            return (
                f"status {data.get('health')}"
                + (f" for {m}" if m else "")
                + f": {data.get('note')}"
            )
        case "BaselineSet":
            return f"baseline {data.get('name')} set"
        case "ProjectTargetSet":
            return f"project target set to {data.get('target') or 'none (cleared)'}"
        case "DependencyAdded":
            return (
                f"{m} now depends on {data.get('depends_on')} (lag {data.get('lag_days', 0)} days)"
            )
        case (
            "ProjectCreated"
            | "DependencyRemoved"
            | "DeadlineReached"
            | "StakeholderSubscribed"
            | "StakeholderUnsubscribed"
        ):
            return kind + (f" {m}" if m else "")  # the type and the milestone say enough
    raise UnhandledEvent(kind, "describe")


def matching(
    subs: Sequence[Subscription], project_id: str, milestone_id: str | None
) -> list[Subscription]:
    return [
        s for s in subs if s.project_id == project_id and (s.scope == "" or s.scope == milestone_id)
    ]


def event_notifications(
    position: int, stored: StoredEvent, subs: Sequence[Subscription], now: dt.datetime
) -> list[Queued]:
    """One notification per matching subscription, carrying the event's trace context (the
    delivery's span links to it)."""
    kind = KINDS.get(stored.type)
    if kind is None:
        return []
    data = msgspec.to_builtins(stored.data)
    data.pop("type", None)
    milestone_id = data.get("milestone_id")
    event = {
        "type": stored.type,
        "id": stored.id,
        "time": stored.time,
        "actor": stored.actor,
        "correlationid": stored.correlationid,
        "causationid": stored.causationid,
        "data": data,
    }
    out = []
    for sub in matching(subs, data["project_id"], milestone_id):
        out.append(
            Queued(
                Notification(
                    id=delivery_id(stored.id, sub),
                    kind=kind,
                    project_id=data["project_id"],
                    milestone_id=milestone_id,
                    stakeholder=sub.stakeholder,
                    summary=describe(stored.type, data),
                    created_at=now,
                    position=position,
                    event=event,
                ),
                sub,
                stored.traceparent,
            )
        )
    return out
