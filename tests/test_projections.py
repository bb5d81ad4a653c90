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


async def test_status_rows_read_back_in_any_time_zone_and_at_infinity(intake, nc, db_url):
    """The status apply reads the rows a batch changes back as ``row_to_json`` text: a time in
    the session's zone (not UTC here) comes back as the same instant in UTC, a due date stored
    as ``infinity`` (``date.max``, an event older than the intake's bounds) as ``date.max``.
    Live with one event per batch, and rebuilt one event per batch, the table is the fold."""
    from events import MilestoneAchieved, MilestonePlanned, TaskAdded
    from projections.rebuild import rebuild
    from projections.status import from_json
    from tests.conftest import append_as_before

    admin = await connect(db_url)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Kolkata'")
    finally:
        await admin.close()
    achieved = dt.datetime(2026, 11, 2, 8, 30, tzinfo=dt.UTC)
    facts = [
        MilestonePlanned(
            project_id="tz", milestone_id="far", name="Far", kind="time", due=dt.date.max
        ),
        MilestoneAchieved(project_id="tz", milestone_id="far", achieved_at=achieved),
        TaskAdded(project_id="tz", milestone_id="far", task_id="t1", title="After"),
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(Runner(PROJECTIONS["status"], db_url, nc).run(stop))
    try:
        for n, fact in enumerate(facts):  # one batch each: every apply reads the row back
            position = await append_as_before(nc, f"tz-{n}", "test", fact)

            async def passed(position: int = position) -> bool:
                return await checkpoint(db_url, "status") >= position

            await wait_for(passed, what="status to apply the event")
    finally:
        stop.set()
        await task
    events = await all_events(nc)
    row = (await status_rows(db_url))[("tz", "far")]
    assert (row.due, row.achieved_at, row.tasks_total) == (dt.date.max, achieved, 1)
    assert await status_rows(db_url) == fold(events)
    conn = await connect(db_url)
    try:
        assert await conn.fetchval("SHOW timezone") == "Asia/Kolkata"
        text = await conn.fetchval("SELECT row_to_json(s)::text FROM ms_status s")
        record = await conn.fetchrow(f"SELECT {', '.join(COLUMNS)} FROM ms_status")
    finally:
        await conn.close()
    assert "+05:30" in text and '"infinity"' in text  # what the decode is given
    read = from_json(text)
    assert read == from_db(record)
    assert read.updated_at.tzinfo is dt.UTC and read.achieved_at == achieved
    assert read.achieved_at.tzinfo is dt.UTC
    await rebuild(PROJECTIONS["status"], db_url, nc, batch_size=1)  # TAKE, event by event
    assert await status_rows(db_url) == fold(events)
