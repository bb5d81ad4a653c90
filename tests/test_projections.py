"""The read side against real servers: runner, checkpoints, parking, rebuild, standby."""

from __future__ import annotations

import asyncio
import datetime as dt

from events import decode_stored
from projections import PROJECTIONS
from projections.db import connect
from projections.runner import Runner
from projections.status import COLUMNS, fold, from_db
from services.eventlog.log import EventLog
from tests.conftest import cloudevent, plan_project, request, wait_for


async def checkpoint(db_url: str, name: str) -> int:
    conn = await connect(db_url)
    try:
        return await conn.fetchval("SELECT position FROM checkpoints WHERE projection = $1", name)
    finally:
        await conn.close()


async def status_rows(db_url: str, schema: str = "milestones") -> dict:
    conn = await connect(db_url)
    try:
        rows = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM {schema}.ms_status")
    finally:
        await conn.close()
    return {(r["project_id"], r["milestone_id"]): from_db(r) for r in rows}


async def all_events(nc) -> list:
    return [
        (m.seq, decode_stored(m.data))
        for m in await EventLog(nc).read_subject("milestones.events.>")
    ]


async def test_status_equals_an_in_memory_fold(intake, nc, db_url):
    for ce in plan_project("p", "m1") + plan_project("q", "m2", kind="technical"):
        await request(nc, ce)
    await request(
        nc, cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m1", "task_id": "t1"})
    )
    last = (
        (
            await request(
                nc,
                cloudevent(
                    "MilestoneRescheduled",
                    {
                        "project_id": "p",
                        "milestone_id": "m1",
                        "new_due": "2027-01-10",
                        "reason": "vendor",
                    },
                ),
            )
        )
        .events[-1]
        .position
    )
    stop = asyncio.Event()
    runner = Runner(PROJECTIONS["status"], db_url, nc)
    task = asyncio.create_task(runner.run(stop))
    try:

        async def caught_up() -> bool:
            return await checkpoint(db_url, "status") >= last

        await wait_for(caught_up, what="status to reach the last position")
        rows = await status_rows(db_url)
        assert rows == fold(await all_events(nc))
        row = rows[("p", "m1")]
        assert (row.tasks_total, row.tasks_done, row.progress, row.reschedules) == (2, 1, 50, 1)
        assert (row.due, row.first_due, row.missed, row.violations) == (
            dt.date(2027, 1, 10),
            dt.date(2026, 12, 1),
            False,
            {},
        )
    finally:
        stop.set()
        await task
