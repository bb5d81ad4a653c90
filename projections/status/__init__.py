"""Status read model: one row per milestone. ``evolve`` is pure; ``apply`` does the I/O.

Health (documented in the README), judged as of the latest event for the milestone:
- ``achieved``: it was achieved;  ``cancelled``: it was cancelled;
- ``missed``: its due date has passed (judged at the latest event, e.g. the scheduler's
  ``DeadlineReached`` at midnight UTC after the due date) and it is not achieved;
- ``at_risk``: it slipped (rescheduled later at least once), or it is due within 14 days of the
  latest event with less than half of its tasks done;
- ``on_track``: otherwise.
Each row carries ``health_reasons``: the rule(s) that decided its health.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import asyncpg
import msgspec

from events import (
    DeadlineReached,
    MilestoneMissed,
    MilestoneAchieved,
    MilestoneCancelled,
    MilestonePlanned,
    MilestoneRescheduled,
    StoredEvent,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
    decode_stored,
)
from projections.base import Batch
from services.store import EVENTS_STREAM

AT_RISK_WINDOW = dt.timedelta(days=14)


class StatusRow(msgspec.Struct, kw_only=True, frozen=True):
    project_id: str
    milestone_id: str
    name: str
    kind: str
    phase: str | None
    ord: int
    due: dt.date
    first_due: dt.date
    achieved_at: dt.datetime | None
    cancelled: bool
    tasks: dict[str, bool]
    tasks_total: int
    tasks_done: int
    progress: int
    health: str
    health_reasons: list[str]
    reschedules: int
    last_position: int
    updated_at: dt.datetime


COLUMNS = tuple(StatusRow.__struct_fields__)


def judge(row: StatusRow, as_of: dt.datetime) -> tuple[str, list[str]]:
    if row.achieved_at is not None:
        return "achieved", [f"achieved {row.achieved_at.date().isoformat()}"]
    if row.cancelled:
        return "cancelled", ["cancelled"]
    today = as_of.date()
    if today > row.due:
        open_tasks = row.tasks_total - row.tasks_done
        return "missed", [f"due {row.due.isoformat()} passed ({(today - row.due).days} days) without achievement, "
                          f"{open_tasks} of {row.tasks_total} tasks open"]
    reasons = []
    if row.due > row.first_due:
        reasons.append(f"slipped {(row.due - row.first_due).days} days since first planned ({row.first_due.isoformat()})")
    if row.due - today <= AT_RISK_WINDOW and row.progress < 50:
        reasons.append(f"due in {(row.due - today).days} days with {row.progress}% of tasks done")
    if reasons:
        return "at_risk", reasons
    return "on_track", [f"due {row.due.isoformat()}, {row.progress}% done"]


def _with_tasks(row: StatusRow, tasks: dict[str, bool]) -> StatusRow:
    done = sum(tasks.values())
    total = len(tasks)
    return msgspec.structs.replace(
        row, tasks=tasks, tasks_total=total, tasks_done=done, progress=(100 * done // total) if total else 0
    )


def evolve(row: StatusRow | None, position: int, stored: StoredEvent) -> StatusRow | None:
    """Pure: the row after one event (``None`` until the milestone is planned)."""
    event = stored.data
    replace = msgspec.structs.replace
    match event:
        case MilestonePlanned():
            row = StatusRow(
                project_id=event.project_id, milestone_id=event.milestone_id, name=event.name, kind=event.kind,
                phase=event.phase, ord=event.order, due=event.due, first_due=event.due, achieved_at=None,
                cancelled=False, tasks={}, tasks_total=0, tasks_done=0, progress=0, health="on_track",
                health_reasons=[], reschedules=0, last_position=position, updated_at=stored.recordedtime,
            )
        case _ if row is None:
            return None
        case TaskAdded(task_id=t):
            row = _with_tasks(row, {**row.tasks, t: False})
        case TaskCompleted(task_id=t, result=result) if t in row.tasks:
            row = _with_tasks(row, {**row.tasks, t: result != "failed"})
        case TaskReopened(task_id=t) if t in row.tasks:
            row = _with_tasks(row, {**row.tasks, t: False})
        case MilestoneRescheduled(new_due=new_due):
            row = replace(row, due=new_due, reschedules=row.reschedules + 1)
        case MilestoneAchieved(achieved_at=at):
            row = replace(row, achieved_at=at or stored.time)
        case MilestoneCancelled():
            row = replace(row, cancelled=True)
        case DeadlineReached() | MilestoneMissed():
            # time passing: whatever the message's own time, the deadline (midnight UTC after
            # the due date) has arrived; judged from there
            deadline = dt.datetime.combine(row.due + dt.timedelta(days=1), dt.time(0), dt.UTC)
            health, reasons = judge(row, max(stored.time, deadline))
            return replace(row, health=health, health_reasons=reasons, last_position=position,
                           updated_at=stored.recordedtime)
        case _:
            return row
    health, reasons = judge(row, stored.time)
    return replace(row, health=health, health_reasons=reasons, last_position=position, updated_at=stored.recordedtime)


_UPSERT = (
    f"INSERT INTO ms_status ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) "
    "ON CONFLICT (project_id, milestone_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("project_id", "milestone_id"))
)
_SELECT = (
    f"SELECT {', '.join(COLUMNS)} FROM ms_status s "
    "JOIN unnest($1::text[], $2::text[]) AS k(p, m) ON s.project_id = k.p AND s.milestone_id = k.m"
)


class StatusProjection:
    name = "status"
    stream = EVENTS_STREAM
    subject = "milestones.events.>"  # all events, so the checkpoint passes every position
    tables = ("ms_status",)
    schema_sql = (Path(__file__).parent / "schema.sql").read_text()
    decode = staticmethod(decode_stored)

    async def apply(self, conn: asyncpg.Connection, batch: Batch, schema: str) -> None:
        batch = [(p, e) for p, e in batch if is_milestone_event(e)]
        keys = {(e.data.project_id, e.data.milestone_id) for _, e in batch}  # type: ignore[attr-defined]
        ps, ms = zip(*keys, strict=True) if keys else ((), ())
        rows: dict[tuple[str, str], StatusRow | None] = {
            (r["project_id"], r["milestone_id"]): StatusRow(**dict(r))
            for r in await conn.fetch(_SELECT, list(ps), list(ms))
        }
        changed: dict[tuple[str, str], StatusRow] = {}
        for position, stored in batch:
            key = (stored.data.project_id, stored.data.milestone_id)  # type: ignore[attr-defined]
            after = evolve(rows.get(key), position, stored)
            rows[key] = after
            if after is not None:
                changed[key] = after
        if changed:
            await conn.executemany(_UPSERT, [tuple(msgspec.structs.astuple(r)) for r in changed.values()])


def is_milestone_event(stored: StoredEvent) -> bool:
    return stored.subject.count(".") == 3  # milestones.events.<project>.<milestone>


def fold(events: list[tuple[int, StoredEvent]]) -> dict[tuple[str, str], StatusRow]:
    """The whole read model in memory (tests compare it with the table)."""
    rows: dict[tuple[str, str], StatusRow | None] = {}
    for position, stored in events:
        if not is_milestone_event(stored):
            continue
        key = (stored.data.project_id, stored.data.milestone_id)  # type: ignore[attr-defined]
        rows[key] = evolve(rows.get(key), position, stored)
    return {k: v for k, v in rows.items() if v is not None}
