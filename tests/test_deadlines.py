"""Time passing as an event: deadlines stored as JetStream message schedules fire DeadlineReached
into the inbox, on a real nats-server (2.12+), and the read models show what it meant."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json

from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from events import decode_stored
from events.subjects import INBOX_STREAM, INBOX_SUBJECTS, schedule_subject
from services.app.wiring import prepare_streams
from services.domain.milestone import deadline
from services.eventlog.log import EventLog
from services.intake.deadlines import LATE_DEADLINE_GRACE, Scheduler, deadline_event, firing_time
from services.intake.round import receipt_subject
from tests.conftest import (
    append_as_before,
    caught_up,
    cloudevent,
    connect,
    request,
    wait_for,
)

P = "launch"
D1, D2 = dt.date(2030, 1, 1), dt.date(2030, 2, 1)


def ce(type_: str, **data) -> dict:
    return cloudevent(type_, {"project_id": P, **data})


async def milestone_events(nc, milestone: str) -> list:
    return [
        decode_stored(m.data)
        for m in await EventLog(nc).read_subject(f"milestones.events.{P}.{milestone}")
    ]


async def test_deadlines_fire_from_the_server_and_are_judged(system, api, nc, db_url):
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fire = {
        D1: soon + dt.timedelta(seconds=2),
        D2: soon + dt.timedelta(seconds=4),
    }  # deadlines brought near
    stop = asyncio.Event()
    scheduler = asyncio.create_task(Scheduler(nc, deadline_at=fire.__getitem__).run(stop))
    try:
        for c in [
            ce("ProjectCreated", name="Launch"),
            ce(
                "MilestonePlanned",
                milestone_id="quarter",
                name="Q4 close",
                kind="time",
                due=D1.isoformat(),
            ),
            ce("TaskAdded", milestone_id="quarter", task_id="books", title="Close the books"),
            ce("TaskCompleted", milestone_id="quarter", task_id="books"),
            ce(
                "MilestonePlanned",
                milestone_id="contract",
                name="Contract signed",
                kind="event",
                due=D1.isoformat(),
            ),
            ce("TaskAdded", milestone_id="contract", task_id="legal", title="Legal review"),
            ce(
                "MilestonePlanned",
                milestone_id="moved",
                name="Moved",
                kind="time",
                due=D1.isoformat(),
            ),
            ce(
                "MilestoneRescheduled",
                milestone_id="moved",
                new_due=D2.isoformat(),
                reason="scope grew",
            ),
        ]:
            assert (await request(nc, c)).accepted

        async def judged() -> bool:
            for m in ("quarter", "contract", "moved"):
                if not any(
                    e.type in ("MilestoneAchieved", "MilestoneMissed")
                    for e in await milestone_events(nc, m)
                ):
                    return False
            return True

        await wait_for(judged, 20, "the three deadlines to fire and be decided")
    finally:
        stop.set()
        await scheduler

    quarter = [
        (e.type, getattr(e.data, "due", None)) for e in await milestone_events(nc, "quarter")
    ][-2:]
    assert quarter == [
        ("DeadlineReached", D1),
        ("MilestoneAchieved", None),
    ]  # its task was done in time
    contract = await milestone_events(nc, "contract")
    assert [e.type for e in contract][-2:] == ["DeadlineReached", "MilestoneMissed"]
    assert (
        contract[-1].data.open_tasks == ["legal"] and contract[-2].source == "milestones-scheduler"
    )
    moved = [e for e in await milestone_events(nc, "moved") if e.type == "DeadlineReached"]
    assert [e.data.due for e in moved] == [D2]  # the reschedule replaced the first deadline
    replaced = await EventLog(nc).last_of(
        [receipt_subject(_ce(deadline_event(P, "moved", D1, fire[D1])))]
    )
    assert not replaced, "the replaced schedule must never have fired"

    # a deadline firing twice (or sent again by a clock service) appends nothing
    before = await EventLog(nc).last_sequence()
    again = await nc.request(
        "milestones.commands.DeadlineReached", deadline_event(P, "contract", D1, fire[D1])
    )
    assert b'"accepted":true' in again.data and await EventLog(nc).last_sequence() == before

    # the status read model: missed, with the reason; achieved for the time milestone
    await caught_up(
        db_url, max(m.seq for m in await EventLog(nc).read_subject("milestones.events.>"))
    )
    rows = {
        r["milestone_id"]: r for r in (await api.get(f"/projects/{P}/milestones")).json()["data"]
    }
    assert (
        rows["contract"]["health"] == "missed"
        and "1 of 1 tasks open" in rows["contract"]["health_reasons"][0]
    )
    assert rows["quarter"]["health"] == "achieved"
    history = (await api.get("/milestones/contract/history", params={"project_id": P})).json()[
        "data"
    ]
    assert history[-1]["type"] == "MilestoneMissed" and "legal" in history[-1]["reason"]


def _ce(body: bytes):
    from events import CLOUDEVENT_DECODER

    return CLOUDEVENT_DECODER.decode(body)


async def test_an_inbox_stream_from_an_earlier_version_is_upgraded_for_schedules(
    settings, nats_server
):
    nc = await connect(nats_server)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=INBOX_STREAM,
                subjects=["milestones.inbox.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await prepare_streams(nc, settings)
        config = (await js.stream_info(INBOX_STREAM)).config
        assert sorted(config.subjects) == sorted(INBOX_SUBJECTS) and config.allow_msg_schedules
        assert config.allow_atomic  # the scheduler stores its schedules in atomic batches
    finally:
        await nc.close()


def test_a_deadline_already_past_fires_after_a_grace():
    now = dt.datetime(2030, 1, 5, 12, 0, 0, 250_000, tzinfo=dt.UTC)
    ahead = dt.datetime(2030, 1, 6, tzinfo=dt.UTC)
    assert firing_time(ahead, now, LATE_DEADLINE_GRACE) == ahead  # on time
    passed = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    late = firing_time(passed, now, dt.timedelta(minutes=5))
    assert late == dt.datetime(2030, 1, 5, 12, 5, 1, tzinfo=dt.UTC)  # whole seconds, not early
    assert firing_time(now, now, dt.timedelta(0)) == now.replace(microsecond=0) + dt.timedelta(
        seconds=1
    )


async def test_a_plan_that_arrives_late_is_judged_after_its_back_dated_history(intake, nc):
    """A tracker replays its backlog: the plan, then the work done before the deadline. The
    deadline, already past, fires after the grace: the milestone achieved in time is not missed;
    the one with open work is, dated at its deadline, not when the schedule fired."""
    grace = dt.timedelta(seconds=3)
    due = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    before_due = f"{(due - dt.timedelta(days=2)).isoformat()}T10:00:00Z"
    stop = asyncio.Event()
    scheduler = asyncio.create_task(Scheduler(nc, late_grace=grace).run(stop))
    try:
        planned_at = dt.datetime.now(dt.UTC)
        for c in [ce("ProjectCreated", name="Late")] + [
            event
            for m in ("done", "open")
            for event in (
                ce("MilestonePlanned", milestone_id=m, name=m, kind="event", due=due.isoformat()),
                ce("TaskAdded", milestone_id=m, task_id="work", title="The work"),
            )
        ]:
            c["time"] = f"{(due - dt.timedelta(days=30)).isoformat()}T09:00:00Z"
            assert (await request(nc, c)).accepted
        js = nc.jetstream()

        async def schedule_of(m: str):
            try:
                return await js.get_last_msg(INBOX_STREAM, schedule_subject(P, m))
            except NotFoundError:
                return None

        async def stored() -> bool:
            return all([await schedule_of(m) for m in ("done", "open")])

        await wait_for(stored, 10, "both deadlines scheduled")
        spec = ((await schedule_of("done")).headers or {})["Nats-Schedule"]
        fires = dt.datetime.fromisoformat(spec.removeprefix("@at "))
        assert fires >= (planned_at + grace).replace(microsecond=0), spec
        completed = ce("TaskCompleted", milestone_id="done", task_id="work")
        completed["time"] = before_due
        assert (await request(nc, completed)).accepted

        fired = [
            receipt_subject(_ce(deadline_event(P, m, due, deadline(due)))) for m in ("done", "open")
        ]

        async def judged() -> bool:
            return len(await EventLog(nc).last_of(fired)) == 2

        await wait_for(judged, 20, "both late deadlines to fire and be decided")
    finally:
        stop.set()
        await scheduler
    done = await milestone_events(nc, "done")
    assert [e.type for e in done][-2:] == ["TaskCompleted", "MilestoneAchieved"]
    assert done[-1].data.achieved_at == dt.datetime.fromisoformat(before_due)
    missed = await milestone_events(nc, "open")
    assert [e.type for e in missed][-2:] == ["DeadlineReached", "MilestoneMissed"]
    assert {e.time for e in missed[-2:]} == {deadline(due)}  # dated when the deadline passed


_IDS = itertools.count(1)


async def _append_milestone_event(nc, data) -> int:
    """A milestone event appended raw, as the intake stores it; returns its position."""
    return await append_as_before(nc, f"e{next(_IDS)}", "test", data)


def _due_of(schedule) -> str:
    return json.loads(schedule.data)["data"]["due"]


def _planned(milestone: str, due: dt.date):
    from events import MilestonePlanned

    return MilestonePlanned(
        project_id=P, milestone_id=milestone, name=milestone, kind="time", due=due
    )


def _moved(milestone: str, due: dt.date):
    from events import MilestoneRescheduled

    return MilestoneRescheduled(project_id=P, milestone_id=milestone, new_due=due, reason="slip")


async def test_a_batch_of_schedules_is_stored_as_one_each_milestone_with_its_latest_date(
    settings, nats_server
):
    """The scheduler stores a batch's schedules together (one atomic batch): a milestone planned
    and moved within the batch keeps only its latest schedule (the server refuses a batch that
    names one schedule subject twice), every event is acked, and a restart goes on from there."""
    from events.subjects import EVENTS_STREAM
    from services.intake.deadlines import SCHEDULER_DURABLE

    nc = await connect(nats_server)
    stop = asyncio.Event()
    try:
        await prepare_streams(nc, settings)
        js = nc.jetstream()
        last = 0
        for m, due in (("a", D1), ("b", D1), ("a", D2), ("c", D2), ("b", D2), ("a", D1)):
            last = await _append_milestone_event(nc, (_moved if m != "c" else _planned)(m, due))
        scheduler = asyncio.create_task(Scheduler(nc).run(stop))

        async def settled_all() -> bool:
            try:
                info = await js.consumer_info(EVENTS_STREAM, SCHEDULER_DURABLE)
            except NotFoundError:  # not made yet
                return False
            return info.ack_floor.stream_seq == last and info.num_ack_pending == 0

        await wait_for(settled_all, 20, "the scheduler to settle every event")
        info = await js.consumer_info(EVENTS_STREAM, SCHEDULER_DURABLE)
        assert info.num_redelivered == 0  # stored on the first try: the server took the batch

        async def schedule_of(m: str):
            try:
                return await js.get_last_msg(INBOX_STREAM, schedule_subject(P, m))
            except NotFoundError:
                return None

        dues = {m: _due_of(await schedule_of(m)) for m in "abc"}
        assert dues == {"a": D1.isoformat(), "b": D2.isoformat(), "c": D2.isoformat()}
        stop.set()
        await scheduler

        stop = asyncio.Event()  # started again: it goes on after what it settled
        again = asyncio.create_task(Scheduler(nc).run(stop))
        await _append_milestone_event(nc, _moved("c", D1))

        async def moved() -> bool:
            got = await schedule_of("c")
            return got is not None and _due_of(got) == D1.isoformat()

        await wait_for(moved, 20, "the restarted scheduler to store the new schedule")
        stop.set()
        await again
        info = await js.consumer_info(EVENTS_STREAM, SCHEDULER_DURABLE)
        assert info.num_redelivered == 0
    finally:
        stop.set()
        await nc.close()
