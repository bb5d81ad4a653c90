"""The demo tells a true story: loaded through the intake with the deadline scheduler running,
it misses what it means to miss and nothing it achieved in time; loaded again, it appends
nothing and asks the intake nothing (real nats-server and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from nats.js.errors import NotFoundError

from events import decode_stored
from events.subjects import INBOX_STREAM, schedule_subject
from services.app import demo
from services.domain.milestone import deadline
from services.eventlog.log import EventLog
from services.intake.deadlines import Scheduler
from services.intake.service import MESSAGES
from tests.conftest import caught_up, wait_for

GRACE = dt.timedelta(hours=1)  # longer than the test: a past deadline is fired by the test


def midnight_after(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), dt.UTC)


async def stored(nc) -> list:
    return [decode_stored(m.data) for m in await EventLog(nc).read_subject("milestones.events.>")]


async def due_dates(nc) -> dict[str, dt.date]:
    """Each demo milestone's current due date, from the log."""
    due: dict[str, dt.date] = {}
    for e in await stored(nc):
        match e.type:
            case "MilestonePlanned":
                due[e.data.milestone_id] = e.data.due
            case "MilestoneRescheduled":
                due[e.data.milestone_id] = e.data.new_due
    return due


async def schedules(nc, milestones: list[str]) -> dict[str, tuple[str, bytes]]:
    """The stored deadline schedule of each milestone: its ``Nats-Schedule`` and its body."""
    js, found = nc.jetstream(), {}
    for m in milestones:
        try:
            raw = await js.get_last_msg(INBOX_STREAM, schedule_subject(demo.PROJECT, m))
        except NotFoundError:
            continue
        found[m] = ((raw.headers or {}).get("Nats-Schedule", ""), raw.data)
    return found


async def test_the_demo_misses_only_what_it_means_to_miss(system, nc, db_url, api):
    today = dt.datetime.now(dt.UTC).date()
    system.queries.today = lambda: today
    t0 = today - dt.timedelta(days=63)
    stop = asyncio.Event()
    scheduler = asyncio.create_task(Scheduler(nc, late_grace=GRACE).run(stop))
    try:
        loading = dt.datetime.now(dt.UTC)
        loaded = await demo.load(system.intake, today)
        assert loaded == demo.Loaded(sent=len(demo.demo_events(today)), already=0, refused=0)
        due = await due_dates(nc)

        async def scheduled() -> bool:
            found = await schedules(nc, list(due))
            return len(found) == len(due) and all(
                json.loads(body)["data"]["due"] == due[m].isoformat()
                for m, (_, body) in found.items()
            )

        await wait_for(scheduled, 20, "a schedule for every milestone's current due date")
    finally:
        stop.set()
        await scheduler
    found = await schedules(nc, list(due))
    past = {m for m in due if deadline(due[m]) <= loading}
    assert past == {"kickoff", "research", "q-close", "design", "api"}
    for m in past:  # a deadline that passed before the plan came fires after the grace
        at = dt.datetime.fromisoformat(found[m][0].removeprefix("@at "))
        assert at >= (loading + GRACE).replace(microsecond=0), (m, at)

    # the story as the log tells it
    events = await stored(nc)
    misses = {
        (e.data.milestone_id, e.data.due, tuple(e.data.open_tasks), e.time)
        for e in events
        if e.type == "MilestoneMissed"
    }
    assert misses == {
        ("design", t0 + dt.timedelta(days=44), ("handoff",), midnight_after(t0 + dt.timedelta(44))),
        ("api", t0 + dt.timedelta(days=55), ("contract",), midnight_after(t0 + dt.timedelta(55))),
    }
    achieved = {
        e.data.milestone_id: e.data.achieved_at for e in events if e.type == "MilestoneAchieved"
    }
    assert set(achieved) == past
    for m in ("kickoff", "research", "q-close", "design"):  # by their (last) due dates
        assert achieved[m] < deadline(due[m]), m
    assert achieved["q-close"] == dt.datetime.combine(due["q-close"], dt.time.max, dt.UTC)
    assert achieved["api"] > deadline(due["api"])  # late: its check passed the day after

    # the scheduler's late deadlines fire (as the server would, after the grace): nothing
    # changes, the milestones were judged by the demo's own deadlines on their dates
    before = len(events)
    for m in past:
        reply = await nc.request("milestones.commands.DeadlineReached", found[m][1], timeout=10)
        assert b'"accepted":true' in reply.data, reply.data
    assert len(await stored(nc)) == before

    # a milestone's history in the order it happened
    await caught_up(
        db_url, max(m.seq for m in await EventLog(nc).read_subject("milestones.events.>"))
    )
    got = await api.get("/milestones/design/history", params={"project_id": demo.PROJECT})
    history = got.json()["data"]
    assert [h["type"] for h in history] == [
        "MilestonePlanned",
        "MilestoneRescheduled",  # shifted when research moved
        "MilestoneMissed",
        "MilestoneRescheduled",  # moved two days after it was missed
        "MilestoneAchieved",
    ]
    assert [h["occurred_at"] for h in history] == sorted(h["occurred_at"] for h in history)

    # one expected finish: the status (and so the Gantt), the report and the trend agree
    def data(got) -> dict | list:
        assert got.status_code == 200, got.text
        return got.json()["data"]

    base = f"/projects/{demo.PROJECT}"
    status = {
        m["milestone_id"]: (m["expected_finish"], m["health"])
        for m in data(await api.get(f"{base}/milestones", params={"limit": 100}))
    }
    report = {
        m["milestone_id"]: (m["expected_finish"], m["health"])
        for m in data(await api.get(f"{base}/report"))["milestones"]
    }
    trend = {
        s["milestone_id"]: s["points"][-1][:2]  # [report date, expected finish, forecast]
        for s in data(await api.get(f"{base}/trend"))["series"]
    }
    assert report == status
    assert {m: [today.isoformat(), status[m][0]] for m in trend} == trend
    assert len(status) == len(due) and any(h == "late" for _, h in status.values())

    # the Go/No-Go gate: its tasks done, dana's approval given (as her principal), lee's pending
    gate = data(await api.get(f"/milestones/{demo.GATE}", params={"project_id": demo.PROJECT}))
    assert gate["health_reasons"][0] == "awaiting approval (1 of 2: dana)"
    assert gate["sign_off"]["state"] == "awaiting" and gate["sign_off"]["pending"] == ["lee"]
    assert gate["sign_off"]["approvals"]["dana"]["principal"] == "system:demo-dana"

    # a critical chain (the partner contract drives the launch), and a forecast from the pace
    # of work that disagrees with the plan: build's grown scope does not fit its due date
    path = data(await api.get(f"{base}/critical-path"))
    assert path["chain"] == ["contract", "launch"] and path["project_float_days"] == 0
    build = data(await api.get("/milestones/build", params={"project_id": demo.PROJECT}))
    assert build["forecast"] > build["due"] >= build["expected_finish"]
    assert build["health"] == "at_risk" and any(
        r.startswith("forecast ") and "after its due date" in r for r in build["health_reasons"]
    )

    # loaded again (a restart of `milestones dev --demo`): nothing appended, nothing sent
    last = await EventLog(nc).last_sequence()
    asked = MESSAGES.labels("demo", "accepted")._value.get()
    again = await demo.load(system.intake, today)
    assert again == demo.Loaded(sent=0, already=len(demo.demo_events(today)), refused=0)
    assert await EventLog(nc).last_sequence() == last
    assert MESSAGES.labels("demo", "accepted")._value.get() == asked
