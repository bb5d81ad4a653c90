"""The event store against a real nats-server: OCC, atomic batches, receipts (idempotency)."""

from __future__ import annotations

import asyncio
import json

import msgspec
import nats
import pytest

from events import decode_stored
from events.errors import StartupError
from events.subjects import EVENTS_STREAM
from services.app.wiring import intake as run_intake
from services.app.wiring import prepare_streams
from services.auth.principal import SERVICE
from services.domain.milestone import Milestone
from services.eventlog.log import AppendConflict, EventLog, OutgoingMessage
from services.eventlog.streams import check_server_version
from services.intake.committer import Command, Committer
from services.intake.parse import Limits, parse
from tests.conftest import cloudevent, connect, plan_project, request, wait_for


def commands(*ces: dict) -> list[Command]:
    return parse(msgspec.json.encode(list(ces)), Limits(), SERVICE)


async def stream_messages(
    nc: nats.NATS, subject: str = "milestones.events.>"
) -> list[tuple[int, str, str]]:
    log = EventLog(nc)
    msgs = await log.read_subject(subject)
    return [(m.seq, m.subject, decode_stored(m.data).type) for m in msgs]


async def test_append_checks_the_expected_last_subject_sequence(settings, nc):
    await prepare_streams(nc, settings)
    log = EventLog(nc)
    first = await log.append([OutgoingMessage("milestones.events.p.m", b"{}", 0)])
    with pytest.raises(AppendConflict):
        await log.append([OutgoingMessage("milestones.events.p.m", b"{}", 0)])
    second = await log.append([OutgoingMessage("milestones.events.p.m", b"{}", first)])
    assert second == first + 1


async def test_a_batch_is_all_or_nothing(settings, nc):
    await prepare_streams(nc, settings)
    log = EventLog(nc)
    await log.append([OutgoingMessage("milestones.events.p.a", b"{}", 0)])
    before = await log.last_sequence()
    # The second message's expectation fails, so the first must not be stored either.
    with pytest.raises(AppendConflict):
        await log.append(
            [
                OutgoingMessage("milestones.events.p.b", b"{}", 0),
                OutgoingMessage("milestones.events.p.a", b"{}", 0),
            ]
        )
    assert await log.last_sequence() == before
    assert await log.read_subject("milestones.events.p.b") == []


async def test_an_uncommitted_batch_stores_nothing(settings, nc):
    """A writer that dies after sending part of a batch leaves no trace in the log."""
    await prepare_streams(nc, settings)
    log = EventLog(nc)
    before = await log.last_sequence()
    for i in (1, 2):
        await nc.publish(
            "milestones.events.p.x",
            b"{}",
            headers={"Nats-Batch-Id": "dead", "Nats-Batch-Sequence": str(i)},
        )
    await nc.flush()
    assert await log.last_sequence() == before


class GatedLog(EventLog):
    """A real EventLog whose next append waits until released: lets a test interleave writers."""

    def __init__(self, nc: nats.NATS) -> None:
        super().__init__(nc)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.gated = True
        self.conflicts = 0

    async def append(self, messages):
        if self.gated:
            self.gated = False
            self.reached.set()
            await self.release.wait()
        try:
            return await super().append(messages)
        except AppendConflict:
            self.conflicts += 1
            raise


async def test_two_writers_on_one_milestone_lose_no_update(settings, nc, nats_server):
    """Writer A decides on state that writer B changes before A appends: A's append fails the
    OCC check on the real server, A reloads, decides again and records B's date as the old one."""
    await prepare_streams(nc, settings)
    nc_b = await connect(nats_server)
    a, b = Committer(GatedLog(nc)), Committer(EventLog(nc_b))
    await a.start(), await b.start()
    try:
        for ce in plan_project("p", "m"):
            assert (await b.submit(commands(ce))).accepted
        move_a = cloudevent(
            "MilestoneRescheduled",
            {"project_id": "p", "milestone_id": "m", "new_due": "2027-03-01", "reason": "A"},
        )
        move_b = cloudevent(
            "MilestoneRescheduled",
            {"project_id": "p", "milestone_id": "m", "new_due": "2027-02-01", "reason": "B"},
        )
        reply_a = asyncio.create_task(a.submit(commands(move_a)))
        await asyncio.wait_for(a.log.reached.wait(), 5)  # A has decided (old_due 2026-12-01)
        assert (await b.submit(commands(move_b))).accepted
        a.log.release.set()
        assert (await reply_a).accepted
        assert a.log.conflicts == 1
        msgs = await EventLog(nc).read_subject("milestones.events.p.m")
        moves = [decode_stored(m.data).data for m in msgs][-2:]
        assert [(str(e.old_due), str(e.new_due)) for e in moves] == [
            ("2026-12-01", "2027-02-01"),
            ("2027-02-01", "2027-03-01"),
        ]
    finally:
        await a.stop(), await b.stop()
        await nc_b.close()


async def test_a_writer_that_keeps_losing_gets_conflict(settings, nc, nats_server):
    await prepare_streams(nc, settings)
    nc_b = await connect(nats_server)
    a, b = Committer(GatedLog(nc), max_attempts=1), Committer(EventLog(nc_b))
    await a.start(), await b.start()
    try:
        for ce in plan_project("p", "m"):
            await b.submit(commands(ce))
        pending = asyncio.create_task(
            a.submit(
                commands(
                    cloudevent(
                        "TaskAdded",
                        {"project_id": "p", "milestone_id": "m", "task_id": "ta", "title": "A"},
                    )
                )
            )
        )
        await asyncio.wait_for(a.log.reached.wait(), 5)
        await b.submit(
            commands(
                cloudevent(
                    "TaskAdded",
                    {"project_id": "p", "milestone_id": "m", "task_id": "tb", "title": "B"},
                )
            )
        )
        a.log.release.set()
        reply = await pending
        assert not reply.accepted and reply.error.code == "conflict"
        assert "send it again" in reply.error.message
        types = [
            decode_stored(m.data).data.task_id
            for m in await EventLog(nc).read_subject("milestones.events.p.m")
            if decode_stored(m.data).type == "TaskAdded"
        ]
        assert "ta" not in types and "tb" in types
    finally:
        await a.stop(), await b.stop()
        await nc_b.close()


async def test_concurrent_messages_on_one_milestone_all_apply(intake, nc):
    for ce in plan_project("p", "m", tasks=()):
        assert (await request(nc, ce)).accepted
    adds = [
        cloudevent(
            "TaskAdded", {"project_id": "p", "milestone_id": "m", "task_id": f"t{i}", "title": "x"}
        )
        for i in range(60)
    ]
    replies = await asyncio.gather(*(request(nc, ce) for ce in adds))
    assert all(r.accepted for r in replies)
    positions = [r.events[0].position for r in replies]
    assert len(set(positions)) == 60
    state = Milestone(project_id="p", milestone_id="m")
    from services.domain.milestone import evolve

    for m in await EventLog(nc).read_subject("milestones.events.p.m"):
        state = evolve(state, decode_stored(m.data).data)
    assert set(state.tasks) == {f"t{i}" for i in range(60)}


async def test_a_repeat_appends_nothing_and_answers_like_the_first_time(intake, nc, settings):
    for ce in plan_project("p", "m"):
        await request(nc, ce)
    complete = cloudevent(
        "TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t1"}, id="once"
    )
    first = await request(nc, complete)
    assert first.accepted and len(first.events) == 1
    last = await EventLog(nc).last_sequence()
    assert await request(nc, complete) == first
    # Concurrent repeats, too:
    assert all(r == first for r in await asyncio.gather(*(request(nc, complete) for _ in range(5))))
    assert await EventLog(nc).last_sequence() == last


async def test_a_repeat_after_a_restart_appends_nothing(settings, nc):
    """Receipts live in the stream itself, so idempotency does not depend on a process's memory
    or on JetStream's duplicate window (Nats-Msg-Id is not used at all)."""
    complete = cloudevent(
        "TaskCompleted",
        {"project_id": "p", "milestone_id": "m", "task_id": "t2"},
        id="after-restart",
    )
    async with run_intake(settings):
        for ce in plan_project("p", "m"):
            await request(nc, ce)
        first = await request(nc, complete)
        assert [e.type for e in first.events] == ["TaskCompleted"]
    last = await EventLog(nc).last_sequence()
    async with run_intake(settings):  # a new process: empty cache
        assert await request(nc, complete) == first
    assert await EventLog(nc).last_sequence() == last
    info = await nc.jetstream().stream_info(EVENTS_STREAM)
    assert info.state.last_seq == last


async def test_a_message_with_several_events_appends_them_together(intake, nc):
    for ce in plan_project("p", "m"):
        await request(nc, ce)
    await request(
        nc, cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t1"})
    )
    reply = await request(
        nc, cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t2"})
    )
    assert [e.type for e in reply.events] == ["TaskCompleted", "MilestoneAchieved"]
    assert reply.events[1].position == reply.events[0].position + 1
    stored = {m.seq: m for m in await EventLog(nc).read_subject("milestones.events.p.m")}
    headers_batch = await nc.jetstream().get_msg(EVENTS_STREAM, reply.events[1].position)
    assert (
        headers_batch.headers["Nats-Batch-Id"]
        == (await nc.jetstream().get_msg(EVENTS_STREAM, reply.events[0].position)).headers[
            "Nats-Batch-Id"
        ]
    )
    fact, derived = (decode_stored(stored[e.position].data) for e in reply.events)
    assert (
        derived.causationid == fact.id and derived.correlationid == fact.correlationid
    )  # caused by the fact


async def test_a_batch_with_one_refused_event_appends_none(intake, nc):
    for ce in plan_project("p", "m"):
        await request(nc, ce)
    before = await EventLog(nc).last_sequence()
    batch = [
        cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t1"}),
        cloudevent("TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "nope"}),
    ]
    reply = await request(nc, batch)
    assert not reply.accepted and reply.error.code == "not_found"
    assert reply.error.message.startswith("event #2")
    assert await EventLog(nc).last_sequence() == before
    batch[1]["data"]["task_id"] = "t2"
    reply = await request(nc, batch)
    assert [e.type for e in reply.events] == ["TaskCompleted", "TaskCompleted", "MilestoneAchieved"]


async def test_inbox_keeps_messages_while_the_intake_is_down(settings, nc):
    await prepare_streams(nc, settings)  # the streams exist (a previous start, or provisioning)
    js = nc.jetstream()
    published = plan_project("p", "m", tasks=tuple(f"t{i}" for i in range(20)))
    published.append(
        cloudevent(
            "TaskAdded", {"project_id": "p", "milestone_id": "ghost", "task_id": "t", "title": "x"}
        )
    )
    for ce in published:
        await js.publish(f"milestones.inbox.{ce['type']}", json.dumps(ce).encode())
    assert await EventLog(nc).last_sequence() == 0  # nobody is consuming yet

    async with run_intake(settings):

        async def all_in() -> bool:
            return len(await stream_messages(nc)) == len(published) - 1

        await wait_for(all_in, what="inbox messages to reach the event log")
        from events import REJECTION_DECODER
        from events.subjects import REJECTIONS_STREAM
        from services.eventlog.log import direct_batch

        async def rejected() -> bool:
            return bool(
                await direct_batch(
                    nc,
                    REJECTIONS_STREAM,
                    {"seq": 1, "next_by_subj": "milestones.rejections.>", "batch": 10},
                )
            )

        await wait_for(rejected, what="the rejection record")
    types = [t for _, _, t in await stream_messages(nc)]
    assert types == [ce["type"] for ce in published[:-1]]
    task_ids = [
        decode_stored(m.data).data.task_id
        for m in await EventLog(nc).read_subject("milestones.events.p.m")
        if decode_stored(m.data).type == "TaskAdded"
    ]
    assert task_ids == [f"t{i}" for i in range(20)]
    rej = await direct_batch(
        nc, REJECTIONS_STREAM, {"seq": 1, "next_by_subj": "milestones.rejections.>", "batch": 10}
    )
    record = REJECTION_DECODER.decode(rej[0].data)
    assert record.code == "not_found" and "ghost" in record.message
    assert json.loads(record.payload)["id"] == published[-1]["id"]


async def test_startup_refuses_a_stream_with_the_wrong_settings(settings, nc):
    from nats.js.api import StorageType, StreamConfig

    await nc.jetstream().add_stream(
        StreamConfig(
            name=EVENTS_STREAM, subjects=["milestones.events.>"], storage=StorageType.MEMORY
        )
    )
    with pytest.raises(StartupError) as info:
        await prepare_streams(nc, settings)
    assert "stream MILESTONES exists with subjects=" in str(info.value)
    assert "\n" not in str(info.value)


def test_startup_refuses_an_old_nats_server():
    from nats.aio.client import ServerVersion

    class Old:
        connected_server_version = ServerVersion("2.9.25")
        connected_url = None

    with pytest.raises(
        StartupError, match=r"nats-server 2\.9\.25 .* too old: Milestones needs 2\.12\.0\+"
    ):
        check_server_version(Old())  # type: ignore[arg-type]


async def test_a_repeat_gets_its_first_answer_from_the_fast_path(settings, nc):
    """The committer trusts its cache and skips reading receipts; a repeat must still get its
    first answer, also when deciding it again now would refuse it or change nothing."""
    await prepare_streams(nc, settings)
    committer = Committer(EventLog(nc))
    await committer.start()
    try:
        setup = plan_project("p", "m", kind="event", tasks=("t1",))
        for ce in setup:
            assert (await committer.submit(commands(ce))).accepted
        add_t2 = cloudevent(
            "TaskAdded", {"project_id": "p", "milestone_id": "m", "task_id": "t2", "title": "T2"}
        )
        done_t1 = cloudevent(
            "TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t1"}
        )
        done_t2 = cloudevent(
            "TaskCompleted", {"project_id": "p", "milestone_id": "m", "task_id": "t2"}
        )
        first = [await committer.submit(commands(ce)) for ce in (add_t2, done_t1, done_t2)]
        assert [e.type for e in first[2].events] == [
            "TaskCompleted",
            "MilestoneAchieved",
        ]  # closed now
        before = await EventLog(nc).last_sequence()
        for ce, reply in zip((add_t2, done_t1, done_t2, setup[1]), [*first, None], strict=True):
            again = await committer.submit(commands(ce))
            assert again.accepted, again.error
            if reply is not None:
                assert again == reply  # same event ids and positions
        assert await EventLog(nc).last_sequence() == before  # nothing appended
    finally:
        await committer.stop()


async def test_reschedules_across_many_projects_in_one_round(intake, nc):
    """A reschedule reads every milestone of its project (a wildcard): one round with reschedules of
    many projects must not exceed what one direct get may answer (the server's 413)."""
    ces = []
    for p in range(120):
        ces.append(cloudevent("ProjectCreated", {"project_id": f"p{p}", "name": "P"}))
        ces += [
            cloudevent(
                "MilestonePlanned",
                {
                    "project_id": f"p{p}",
                    "milestone_id": f"m{m}",
                    "name": "M",
                    "kind": "event",
                    "due": "2027-01-01",
                },
            )
            for m in range(10)
        ]
    for i in range(0, len(ces), 100):
        assert (await request(nc, ces[i : i + 100])).accepted
    replies = await asyncio.gather(
        *(
            request(
                nc,
                cloudevent(
                    "MilestoneRescheduled",
                    {
                        "project_id": f"p{p}",
                        "milestone_id": "m0",
                        "new_due": "2027-02-01",
                        "reason": "later",
                    },
                ),
            )
            for p in range(120)
        )
    )
    assert [r.error for r in replies if not r.accepted] == []
