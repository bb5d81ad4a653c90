"""Status read model: one row per milestone with the facts its health is judged from.

Also every status report, every project, and the stakeholders' webhook subscriptions (the
notifier reads them once this checkpoint has passed the event it notifies, so a subscription
covers every event appended after it). ``evolve`` is pure; ``apply`` does the I/O.

Health is not stored: it depends on the clock and on the predecessors' rows, so
``services.domain.health.judge`` computes it when a query asks (the clock is an input; see the
README).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import asyncpg
import msgspec

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
    MilestoneEvent,
    MilestoneMissed,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    ProjectEvent,
    ProjectTargetSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
    StoredEvent,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
    UnhandledEvent,
    milestone_of,
)
from events.subjects import ALL_EVENTS, EVENTS_STREAM
from projections import db
from projections.base import Batch, decode_event
from projections.status.held import HeldRows
from projections.status.tables import (
    PROJECT_COLUMNS,
    REPORT_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    project_row,
    report_row,
    subscription_row,
)
from projections.storable import integer, jsonb, maybe_text, maybe_timestamp, text, timestamp


class Violation(msgspec.Struct, kw_only=True, frozen=True):
    predecessor_finish: dt.date
    lag_days: int
    earliest: dt.date
    position: int


class Report(msgspec.Struct, kw_only=True, frozen=True):
    health: str
    note: str
    actor: str | None
    reported_at: dt.datetime
    position: int


class Approval(msgspec.Struct, kw_only=True, frozen=True):
    """One approver's sign-off of a gate: when, what it means, and who sent it."""

    at: dt.datetime
    meaning: str
    reason: str | None
    principal: str | None  # the credential it came with (StoredEvent.principal)
    position: int


class ApprovalRejection(msgspec.Struct, kw_only=True, frozen=True):
    by: str
    at: dt.datetime
    reason: str
    meaning: str | None
    principal: str | None
    position: int


class SignOff(msgspec.Struct, kw_only=True, frozen=True):
    """A decision gate's approvers and the state of its sign-off (README "Decision gates")."""

    approvers: list[str]
    approvals_needed: int | None  # None: every approver
    approvals: dict[str, Approval] = {}  # approver -> their approval (a rejection clears them)
    requested_at: dt.datetime | None = None  # the standing ApprovalRequested, if any
    requested_position: int | None = None
    last_rejection: ApprovalRejection | None = None
    awaited_approval: bool = False  # the last MilestoneMissed: its tasks were done, not signed


class StatusRow(msgspec.Struct, kw_only=True, frozen=True):
    project_id: str
    milestone_id: str
    name: str
    kind: str
    phase: str | None
    ord: int
    success_criteria: str | None
    planned_on: dt.date  # the day it was planned
    # the earliest start of its tasks (where elapsed time starts, when known)
    work_start: dt.date | None
    due: dt.date
    first_due: dt.date
    achieved_at: dt.datetime | None
    cancelled: bool
    missed: bool  # its current due date arrived (DeadlineReached) without achievement
    tasks: dict[str, bool]
    task_dues: dict[str, dt.date]
    tasks_total: int
    tasks_done: int
    progress: int
    # the day each done task was completed (its ``completed_at``): the pace the forecast uses
    tasks_done_on: dict[str, dt.date] = {}
    predecessors: dict[str, int]  # finish-to-start: predecessor -> lag in days
    violations: dict[str, Violation]  # predecessor -> the DependencyViolated facts, until it moves
    last_report: Report | None  # the latest StatusReported for this milestone
    reschedules: int
    last_position: int
    updated_at: dt.datetime
    sign_off: SignOff | None = None  # a decision gate's (None: an ordinary milestone)


COLUMNS = tuple(StatusRow.__struct_fields__)


_KEYED = (ProjectEvent, MilestoneEvent)


def key_of(stored: StoredEvent) -> tuple[str, str] | None:
    """The row an event changes: its milestone, or for project events the milestone they name."""
    event = stored.data
    if isinstance(event, MilestoneEvent):  # most events: its own milestone
        return (event.project_id, event.milestone_id) if event.milestone_id else None
    if not isinstance(event, _KEYED):
        raise UnhandledEvent(type(event).__name__, "the status projection")
    milestone_id = milestone_of(event)
    return (event.project_id, milestone_id) if milestone_id else None


_TaskEvent = TaskAdded | TaskCompleted | TaskReopened
_TASK_EVENTS = frozenset((TaskAdded, TaskCompleted, TaskReopened))


def evolve(row: StatusRow | None, position: int, stored: StoredEvent) -> StatusRow | None:
    """Pure: the row after one event (``None`` until the milestone is planned)."""
    event = stored.data
    if type(event) in _TASK_EVENTS:  # most events: at once, not after the match's isinstances
        return None if row is None else _tasks(row, cast(_TaskEvent, event), position, stored)
    match event:
        case MilestonePlanned():
            return _planned(event, position, stored)
        case (
            ProjectCreated()
            | BaselineSet()
            | ProjectTargetSet()
            | StakeholderSubscribed()
            | StakeholderUnsubscribed()
        ):
            return row  # not a milestone row's facts: projects and subscriptions have their own
        case _ if row is None:
            return None
        case TaskAdded() | TaskCompleted() | TaskReopened():
            return _tasks(row, event, position, stored)
        case MilestoneRescheduled() | MilestoneAchieved() | MilestoneCancelled():
            after = _outcome(row, event, stored.time)
        case MilestoneMissed(awaiting_approval=awaiting):
            after = msgspec.structs.replace(row, missed=True)
            if row.sign_off is not None:
                gate = msgspec.structs.replace(row.sign_off, awaited_approval=awaiting)
                after = msgspec.structs.replace(after, sign_off=gate)
        case (
            ApproversSet() | ApprovalRequested() | MilestoneApproved() | MilestoneApprovalRejected()
        ):
            after = msgspec.structs.replace(row, sign_off=_sign_off(row.sign_off, position, stored))
        case DependencyAdded() | DependencyRemoved() | DependencyViolated():
            after = _dependencies(row, event, position)
        case StatusReported(health=health, note=note):
            report = Report(
                health=health,
                note=note,
                actor=stored.actor,
                reported_at=stored.time,
                position=position,
            )
            after = msgspec.structs.replace(row, last_report=report)
        case DeadlineReached():
            after = row  # the decision (achieved or missed) follows as its own event
        case _:
            raise UnhandledEvent(type(event).__name__, "the status projection")
    if after is None:  # a task the row does not know: the row stays as it was
        return row
    return msgspec.structs.replace(after, last_position=position, updated_at=stored.recordedtime)


def _planned(event: MilestonePlanned, position: int, stored: StoredEvent) -> StatusRow:
    gate = SignOff(approvers=list(event.approvers), approvals_needed=event.approvals_needed)
    return StatusRow(
        sign_off=gate if event.approvers else None,
        project_id=event.project_id,
        milestone_id=event.milestone_id,
        name=event.name,
        kind=event.kind,
        phase=event.phase,
        ord=event.order,
        success_criteria=event.success_criteria,
        planned_on=min(stored.time.date(), event.due),
        work_start=None,
        due=event.due,
        first_due=event.due,
        achieved_at=None,
        cancelled=False,
        missed=False,
        tasks={},
        task_dues={},
        tasks_total=0,
        tasks_done=0,
        progress=0,
        tasks_done_on={},
        predecessors={},
        violations={},
        last_report=None,
        reschedules=0,
        last_position=position,
        updated_at=stored.recordedtime,
    )


def _tasks(
    row: StatusRow,
    event: _TaskEvent,
    position: int,
    stored: StoredEvent,
) -> StatusRow:
    """The row after a task changed (as it was, for a task it does not know). One
    ``structs.replace`` for all it changes: a task's events are most of a log, and a copy of the
    row for each change (the tasks and their counts, the gate, the position) made the fold half
    as slow again (3.5 against 2.3 us per event of the benchmark's log, 2026-12-07)."""
    t = event.task_id
    task_dues, work_start, done_on = row.task_dues, row.work_start, row.tasks_done_on
    if isinstance(event, TaskAdded):
        tasks = {**row.tasks, t: False}
        if event.due is not None:
            task_dues = {**task_dues, t: event.due}
        if event.start is not None and (work_start is None or event.start < work_start):
            work_start = event.start
    elif t not in row.tasks:
        return row
    else:
        done, at = False, stored.time
        if isinstance(event, TaskCompleted):
            done, at = event.result != "failed", event.completed_at or stored.time
        tasks = {**row.tasks, t: done}
        done_on = _done_on(done_on, t, done, at)
    gate = row.sign_off
    if gate is not None and not isinstance(event, TaskCompleted):
        # a task added or reopened: a gate's approvals and its request no longer stand (as the
        # decider's ``services.domain.gate.Gate.cleared``)
        gate = msgspec.structs.replace(
            gate, approvals={}, requested_at=None, requested_position=None
        )
    finished, total = sum(tasks.values()), len(tasks)
    return msgspec.structs.replace(
        row,
        tasks=tasks,
        task_dues=task_dues,
        work_start=work_start,
        tasks_total=total,
        tasks_done=finished,
        progress=(100 * finished // total) if total else 0,
        tasks_done_on=done_on,
        sign_off=gate,
        last_position=position,
        updated_at=stored.recordedtime,
    )


def _sign_off(gate: SignOff | None, position: int, stored: StoredEvent) -> SignOff | None:
    replace = msgspec.structs.replace
    event = stored.data
    match event:
        case ApproversSet(approvers=[]):
            return None
        case ApproversSet(approvers=approvers, approvals_needed=needed):
            if gate is None:
                return SignOff(approvers=list(approvers), approvals_needed=needed)
            kept = {a: v for a, v in gate.approvals.items() if a in approvers}
            return replace(gate, approvers=list(approvers), approvals_needed=needed, approvals=kept)
        case _ if gate is None:
            return None  # a sign-off of a milestone that is no gate: the decider refuses those
        case ApprovalRequested():
            return replace(gate, requested_at=stored.time, requested_position=position)
        case MilestoneApproved(approver=who) if who is not None:
            approval = Approval(
                at=event.approved_at or stored.time,
                meaning=event.meaning,
                reason=event.reason,
                principal=stored.principal,
                position=position,
            )
            return replace(gate, approvals={**gate.approvals, who: approval})
        case MilestoneApprovalRejected():
            rejection = ApprovalRejection(
                by=event.approver or stored.principal or "unknown",
                at=event.rejected_at or stored.time,
                reason=event.reason,
                meaning=event.meaning,
                principal=stored.principal,
                position=position,
            )
            return replace(gate, approvals={}, last_rejection=rejection)
    return gate


def _done_on(
    done_on: dict[str, dt.date], task: str, done: bool, at: dt.datetime
) -> dict[str, dt.date]:
    """When each done task was completed: set when it is done, gone when it is open again."""
    rest = dict(done_on)
    rest.pop(task, None)
    if done:
        rest[task] = db.stored_time(at).date()  # ``storable.timestamp``'s, at once for UTC
    return rest


def _outcome(
    row: StatusRow,
    event: MilestoneRescheduled | MilestoneAchieved | MilestoneCancelled,
    time: dt.datetime,
) -> StatusRow:
    replace = msgspec.structs.replace
    match event:
        case MilestoneRescheduled(new_due=new_due):
            return replace(
                row, due=new_due, reschedules=row.reschedules + 1, missed=False, violations={}
            )
        case MilestoneAchieved(achieved_at=at):
            return replace(row, achieved_at=at or time)
        case MilestoneCancelled():
            return replace(row, cancelled=True)


def _dependencies(
    row: StatusRow, event: DependencyAdded | DependencyRemoved | DependencyViolated, position: int
) -> StatusRow:
    replace = msgspec.structs.replace
    match event:
        case DependencyAdded(depends_on=d, lag_days=lag):
            return replace(row, predecessors={**row.predecessors, d: lag})
        case DependencyRemoved(depends_on=d):
            return replace(
                row,
                predecessors={k: v for k, v in row.predecessors.items() if k != d},
                violations={k: v for k, v in row.violations.items() if k != d},
            )
        case DependencyViolated(depends_on=d):
            facts = Violation(
                predecessor_finish=event.predecessor_finish,
                lag_days=event.lag_days,
                earliest=event.earliest,
                position=position,
            )
            return replace(row, violations={**row.violations, d: facts})


# What each column stores of a row's value, where it differs from the value
# (``projections.storable``: what PostgreSQL refuses is stored so that it can be held).
_STORED: dict[str, Callable[[Any], Any]] = {
    "name": text,
    "kind": text,
    "phase": maybe_text,
    "ord": integer,
    "success_criteria": maybe_text,
    "achieved_at": maybe_timestamp,
    "updated_at": timestamp,
    "tasks": jsonb,
    "task_dues": jsonb,
    "tasks_done_on": jsonb,
    "predecessors": jsonb,
    "violations": jsonb,
    "last_report": lambda report: None if report is None else jsonb(report),
    "sign_off": lambda gate: None if gate is None else jsonb(gate),
}


# (column index, what it stores) for the columns that store something else than the value
_CONVERTED = tuple((i, _STORED[c]) for i, c in enumerate(COLUMNS) if c in _STORED)


def stored_row(row: StatusRow) -> tuple:
    """The row as its columns hold it."""
    values = list(msgspec.structs.astuple(row))
    for i, store in _CONVERTED:
        values[i] = store(values[i])
    return tuple(values)


def from_db(record: Any) -> StatusRow:
    """A row from an asyncpg record of ``COLUMNS``. The services read rows with ``from_json``;
    the tests read the table this independent way to check it (and ``from_json``) against the
    in-memory fold."""
    return msgspec.convert(dict(record), StatusRow, strict=False)


_ROW_JSON = msgspec.json.Decoder(StatusRow)
_DATES = ("planned_on", "work_start", "due", "first_due")
_INFINITE = {"infinity": dt.date.max, "-infinity": dt.date.min}


def from_json(text: str) -> StatusRow:
    """A row from its ``row_to_json`` text: the apply's read of the rows a batch changes.

    One typed decode in msgspec instead of asyncpg's record, a jsonb decode per column (seven)
    and ``from_db``'s conversion: those were 9 % of a rebuild of all three read models when the
    projects' events interleave in the log as the intake appends them (about one row read and
    written per event; py-spy, 2026-12-07). Times are taken to UTC, as asyncpg gives them (the
    JSON carries the session's time zone); a date stored as ``infinity`` (``date.max``, see
    ``projections.storable``) takes the slower way."""
    try:
        row = _ROW_JSON.decode(text)
    except msgspec.ValidationError:
        given = msgspec.json.decode(text)
        for name in _DATES:
            if isinstance(value := given.get(name), str) and value in _INFINITE:
                given[name] = _INFINITE[value]
        row = msgspec.convert(given, StatusRow, strict=False)
    if row.updated_at.tzinfo is not dt.UTC or (
        row.achieved_at is not None and row.achieved_at.tzinfo is not dt.UTC
    ):
        achieved = row.achieved_at and row.achieved_at.astimezone(dt.UTC)
        row = msgspec.structs.replace(
            row, updated_at=row.updated_at.astimezone(dt.UTC), achieved_at=achieved
        )
    return row


def _placeholders(n: int) -> str:
    return ", ".join(f"${i}" for i in range(1, n + 1))


_UPSERT = (
    f"INSERT INTO ms_status ({', '.join(COLUMNS)}) VALUES ({_placeholders(len(COLUMNS))}) "
    "ON CONFLICT (project_id, milestone_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("project_id", "milestone_id"))
)
_SELECT = (
    "SELECT row_to_json(s)::text FROM ms_status s "
    "JOIN unnest($1::text[], $2::text[]) AS k(p, m) ON s.project_id = k.p AND s.milestone_id = k.m"
)
# A rebuild's: the batch's rows taken out of its own (shadow) table, to be written back by COPY
_TAKE = (
    "DELETE FROM ms_status s USING unnest($1::text[], $2::text[]) AS k(p, m) "
    "WHERE s.project_id = k.p AND s.milestone_id = k.m "
    "RETURNING row_to_json(s)::text"
)


class StatusProjection:
    name = "status"
    stream = EVENTS_STREAM
    subject = ALL_EVENTS  # all events, so the checkpoint passes every position
    tables = ("ms_status", "ms_status_reports", "ms_projects", "ms_subscriptions")
    table_sql = (Path(__file__).parent / "schema.sql").read_text()
    index_sql = (Path(__file__).parent / "indexes.sql").read_text()  # secondary indexes
    schema_sql = table_sql + index_sql
    decode = staticmethod(decode_event)

    def __init__(self, rows: HeldRows[StatusRow] | None = None) -> None:
        self._held = rows

    def for_rebuild(self) -> StatusProjection:
        """This read model for one rebuild: its rows held in memory from batch to batch
        (``projections.status.held``), written to the table when it has caught up (``flush``)."""
        return StatusProjection(HeldRows())

    def committed(self) -> None:
        """The runner's transaction committed: what its applies staged is held."""
        if self._held is not None:
            self._held.committed()

    def rolled_back(self) -> None:
        if self._held is not None:
            self._held.rolled_back()

    async def flush(self, conn: asyncpg.Connection, schema: str) -> None:
        """Every held row back to the table (a rebuild's, before its indexes and its swap)."""
        if self._held is not None:
            await _copy_rows(conn, self._held.take_all(), schema)

    async def apply(self, conn: asyncpg.Connection, batch: Batch, schema: str) -> None:
        """The batch folded in memory, then one write per table. In a rebuild (``schema`` is
        not the live one: tables of its own, written by this runner alone) the rows are held in
        memory between batches (``for_rebuild``), or else the milestones' rows the batch touches
        are taken out of the table and everything it changed goes back with one binary COPY
        (about five times an upsert's rate here); live, they are upserted."""
        rebuilding = schema != db.SCHEMA
        held = self._held if rebuilding else None
        keyed = [(p, e, k) for p, e in batch if (k := key_of(e)) is not None]
        rows = await self._rows(conn, {k for _, _, k in keyed}, held, rebuilding)
        changed: dict[tuple[str, str], StatusRow] = {}
        for position, stored, key in keyed:
            after = evolve(rows.get(key), position, stored)
            rows[key] = after
            if after is not None:
                changed[key] = after
        if held is not None:
            # a row taken out stays out (evolve never turns a row into None): held, unless it
            # is one of those let go to make room
            kept = {k: r for k, r in rows.items() if r is not None}
            let_go = held.to_let_go(kept)
            await _copy_rows(conn, [r for _, r in let_go], schema)
        elif rebuilding:  # a row taken out comes back
            await _copy_rows(conn, list(changed.values()), schema)
        elif changed:
            await conn.executemany(_UPSERT, [stored_row(r) for r in changed.values()])
        await _project_facts(conn, batch, schema)
        if held is not None:  # every write done: staged, held once the transaction commits
            held.stage(kept, [k for k, _ in let_go])

    @staticmethod
    async def _rows(
        conn: asyncpg.Connection,
        keys: set[tuple[str, str]],
        held: HeldRows[StatusRow] | None,
        rebuilding: bool,
    ) -> dict[tuple[str, str], StatusRow | None]:
        """The rows of ``keys`` there are: held ones, then the table's (taken out of it in a
        rebuild, to be written back)."""
        rows: dict[tuple[str, str], StatusRow | None] = {}
        if held is not None:
            rows = {k: held.get(k) for k in keys if held.holds(k)}
            keys = {k for k in keys if k not in rows}
        if keys:
            ps, ms = zip(*keys, strict=True)
            for (text_,) in await conn.fetch(_TAKE if rebuilding else _SELECT, list(ps), list(ms)):
                got = from_json(text_)
                rows[(got.project_id, got.milestone_id)] = got
        return rows


async def _copy_rows(conn: asyncpg.Connection, rows: list[StatusRow], schema: str) -> None:
    if rows:
        await conn.copy_records_to_table(
            "ms_status", records=[stored_row(r) for r in rows], columns=COLUMNS, schema_name=schema
        )


_FACTS = (
    ProjectCreated,
    ProjectTargetSet,
    StakeholderSubscribed,
    StakeholderUnsubscribed,
    StatusReported,
)


async def _project_facts(conn: asyncpg.Connection, batch: Batch, schema: str) -> None:
    """The batch's projects, subscriptions and status reports (looked for among the few events
    that make them: most of a batch is tasks)."""
    batch = [(p, e) for p, e in batch if isinstance(e.data, _FACTS)]
    if not batch:
        return
    projects = [r for p, e in batch if (r := project_row(p, e)) is not None]
    if projects:
        await conn.copy_records_to_table(
            "ms_projects", records=projects, schema_name=schema, columns=PROJECT_COLUMNS
        )
    for _, stored in batch:  # after the projects' COPY: a project is created before this
        if isinstance(e := stored.data, ProjectTargetSet):
            await conn.execute(
                "UPDATE ms_projects SET target = $2 WHERE project_id = $1", e.project_id, e.target
            )
    for position, stored in batch:  # in order: a subscription can end in the same batch
        if (sub := subscription_row(position, stored)) is not None:
            await conn.execute(
                f"INSERT INTO ms_subscriptions ({', '.join(SUBSCRIPTION_COLUMNS)}) VALUES "
                f"({_placeholders(len(SUBSCRIPTION_COLUMNS))}) ON CONFLICT DO NOTHING",
                *sub,
            )
        elif isinstance(e := stored.data, StakeholderUnsubscribed):
            await conn.execute(
                "DELETE FROM ms_subscriptions WHERE project_id = $1 AND scope = $2 "
                "AND stakeholder = $3 AND url = $4",
                e.project_id,
                e.milestone_id or "",
                text(e.stakeholder),  # as subscription_row stored them
                text(e.url),
            )
    reports = [r for p, e in batch if (r := report_row(p, e)) is not None]
    if reports:
        await conn.copy_records_to_table(
            "ms_status_reports", records=reports, columns=REPORT_COLUMNS, schema_name=schema
        )


def fold(events: list[tuple[int, StoredEvent]]) -> dict[tuple[str, str], StatusRow]:
    """The whole read model in memory (tests compare it with the table)."""
    rows: dict[tuple[str, str], StatusRow | None] = {}
    for position, stored in events:
        if (key := key_of(stored)) is not None:
            rows[key] = evolve(rows.get(key), position, stored)
    return {k: v for k, v in rows.items() if v is not None}
