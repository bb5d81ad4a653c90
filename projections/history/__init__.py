"""History read model: every schedule-relevant change of a milestone, read in time order.

The order is ``occurred_at`` (the CloudEvent time), then position. ``rows`` is pure."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg

from events import (
    ApprovalRequested,
    ApproversSet,
    BaselineSet,
    DeadlineReached,
    DependencyAdded,
    DependencyRemoved,
    DependencyViolated,
    MilestoneAchieved,
    MilestoneApprovalRejected,
    MilestoneApproved,
    MilestoneCancelled,
    MilestoneMissed,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    ProjectTargetSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
    StoredEvent,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
    UnhandledEvent,
)
from events.project import PROJECT_EVENTS
from events.subjects import ALL_EVENTS, EVENTS_STREAM
from projections.base import Batch, decode_event
from projections.db import stored_time
from projections.storable import maybe_text, text, timestamp

COLUMNS = (
    "position",
    "project_id",
    "milestone_id",
    "occurred_at",
    "recorded_at",
    "type",
    "old_due",
    "new_due",
    "reason",
    "actor",
    "source",
)


# Events that change no milestone's schedule (the ``return []`` cases below): most of a log
# (tasks), so looked up before the match. Exact types: anything else goes through the match.
_UNCHANGED = frozenset({TaskAdded, TaskCompleted, TaskReopened, DeadlineReached, *PROJECT_EVENTS})


def rows(position: int, stored: StoredEvent) -> list[tuple]:
    e = stored.data
    if type(e) in _UNCHANGED:
        return []
    change: tuple[dt.date | None, dt.date | None, str | None]
    match e:
        case MilestonePlanned(due=due):
            change = (None, due, None)
        case MilestoneRescheduled(old_due=old, new_due=new, reason=reason):
            change = (old, new, reason)
        case MilestoneAchieved(evidence=evidence):
            change = (None, None, evidence)
        case MilestoneCancelled(reason=reason):
            change = (None, None, reason)
        case DependencyViolated(
            depends_on=d, predecessor_finish=finish, lag_days=lag, due=due, earliest=earliest
        ):
            change = (
                None,
                None,
                f"due {due.isoformat()}, but dependency violated: {d} finishes {finish.isoformat()}"
                + (f" + {lag} days lag" if lag else "")
                + f", so {earliest.isoformat()} at the earliest",
            )
        case MilestoneMissed(due=due, open_tasks=open_tasks):
            change = (
                due,
                None,
                f"deadline passed with {len(open_tasks)} open task(s)"
                + (f": {', '.join(open_tasks)}" if open_tasks else "")
                + ("; it awaited approval" if e.awaiting_approval else ""),
            )
        case (
            ApproversSet() | ApprovalRequested() | MilestoneApproved() | MilestoneApprovalRejected()
        ):
            change = (None, None, sign_off_text(e, stored.principal))
        case TaskAdded() | TaskCompleted() | TaskReopened() | DeadlineReached():
            return []  # the work and the clock: a change of schedule they make is its own event
        case (
            ProjectCreated()
            | DependencyAdded()
            | DependencyRemoved()
            | BaselineSet()
            | ProjectTargetSet()
            | StakeholderSubscribed()
            | StakeholderUnsubscribed()
            | StatusReported()
        ):
            return []  # the project's facts; what a dependency does arrives as DependencyViolated
        case _:
            raise UnhandledEvent(type(e).__name__, "the history projection")
    return [
        (
            position,
            e.project_id,
            e.milestone_id,
            stored.time,
            stored.recordedtime,
            stored.type,
            *change,
            stored.actor,
            stored.source,
        )
    ]


def sign_off_text(
    e: ApproversSet | ApprovalRequested | MilestoneApproved | MilestoneApprovalRejected,
    principal: str | None,
) -> str:
    """A gate's sign-off in words: who (the approver, and the credential it came with), what the
    signature means and why."""
    who = (
        f"{e.approver} (credential {principal})"
        if not isinstance(e, ApproversSet | ApprovalRequested)
        else ""
    )
    match e:
        case ApproversSet(approvers=[]):
            return "no longer a decision gate: no approvers"
        case ApproversSet(approvers=approvers, approvals_needed=needed):
            names = ", ".join(approvers)
            return f"decision gate: approvers {names} ({needed or len(approvers)} needed)"
        case ApprovalRequested(pending=pending, approvals_needed=needed):
            names = ", ".join(pending) or "nobody"
            return f"tasks done: awaiting approval ({needed} needed) of {names}"
        case MilestoneApproved(meaning=meaning, reason=reason):
            return f"approved by {who}: {meaning}" + (f"; reason: {reason}" if reason else "")
        case MilestoneApprovalRejected(meaning=meaning, reason=reason):
            return f"approval rejected by {who}: {reason}" + (
                f"; meaning: {meaning}" if meaning else ""
            )


def in_time_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows (dicts of ``COLUMNS``) as the history query orders them: by when the change
    happened (``occurred_at``), then by position. Positions are arrival order, and a back-dated
    change (a deadline stated late, a replayed backlog) arrives after later ones."""
    # as the table stores the time (UTC, saturated): an instant before year 1 in UTC (a legacy
    # log's 0001-01-01T00:00+14:00) cannot be converted, and compares as the first instant
    return sorted(rows, key=lambda r: (timestamp(r["occurred_at"]), r["position"]))


def stored_row(row: tuple) -> tuple:
    """A row of ``rows`` as the columns hold it (``projections.storable``)."""
    position, project, milestone, occurred, recorded, type_, old, new, reason, actor, source = row
    return (
        position,
        project,
        milestone,
        stored_time(occurred),
        stored_time(recorded),
        text(type_),
        old,
        new,
        maybe_text(reason),
        maybe_text(actor),
        text(source),
    )


class HistoryProjection:
    name = "history"
    stream = EVENTS_STREAM
    subject = ALL_EVENTS
    tables = ("ms_history",)
    table_sql = (Path(__file__).parent / "schema.sql").read_text()
    index_sql = (Path(__file__).parent / "indexes.sql").read_text()  # secondary indexes
    schema_sql = table_sql + index_sql
    decode = staticmethod(decode_event)

    async def apply(self, conn: asyncpg.Connection, batch: Batch, schema: str) -> None:
        records = [stored_row(r) for position, stored in batch for r in rows(position, stored)]
        if records:
            await conn.copy_records_to_table(
                "ms_history", records=records, columns=COLUMNS, schema_name=schema
            )
