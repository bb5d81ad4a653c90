"""Pipelined commit rounds against a real nats-server: the next round is decided and appended
while the last one waits for its answer, and never on a state that round may still change."""

from __future__ import annotations

import asyncio

import msgspec
import nats
import pytest

from events import decode_stored
from services import domain
from services.app.wiring import prepare_streams
from services.auth.principal import SERVICE
from services.eventlog.log import AppendConflict, AppendFailed, EventLog, OutgoingMessage
from services.intake.committer import Command, Committer
from services.intake.parse import Limits, parse
from services.intake.pipeline import aggregate_key, free_of, unit_keys
from tests.conftest import cloudevent, plan_project


def commands(*ces: dict) -> list[Command]:
    return parse(msgspec.json.encode(list(ces)), Limits(), SERVICE)


def task(type_: str, project: str, task_id: str) -> dict:
    data = {"project_id": project, "milestone_id": "m", "task_id": task_id}
    if type_ == "TaskAdded":
        data["title"] = task_id
    return cloudevent(type_, data)


class FailingRound(EventLog):
    """A real EventLog whose armed append waits until released and then fails with ``error``,
    as the server would (unavailable, or a conflict with another writer)."""

    def __init__(self, nc: nats.NATS, error: Exception) -> None:
        super().__init__(nc)
        self.error = error
        self.armed = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.appended: list[list[str]] = []  # the subjects of each append that landed, in order

    async def append(self, messages: list[OutgoingMessage]) -> int:  # type: ignore[override]
        if self.armed:
            self.armed = False
            self.reached.set()
            await self.release.wait()
            raise self.error
        seq = await super().append(messages)
        self.appended.append([m.subject for m in messages])
        return seq


@pytest.mark.parametrize(
    "error",
    [AppendFailed("injected: the log was unavailable"), AppendConflict("injected: wrong last seq")],
    ids=["unavailable", "conflict"],
)
async def test_a_failed_round_holds_back_what_depends_on_it_and_only_that(settings, nc, error):
    await prepare_streams(nc, settings)
    log = FailingRound(nc, error)
    committer = Committer(log)
    await committer.start()
    try:
        for ce in [*plan_project("p", "m"), *plan_project("q", "m")]:
            assert (await committer.submit(commands(ce))).accepted
        log.armed = True
        added = asyncio.create_task(committer.submit(commands(task("TaskAdded", "p", "ta"))))
        await asyncio.wait_for(log.reached.wait(), 5)  # round n is in flight, and will fail
        # decided on round n's state, this would complete a task the log does not hold yet
        completed = asyncio.create_task(
            committer.submit(commands(task("TaskCompleted", "p", "ta")))
        )
        # another project: the next round decides and appends it while round n waits
        other = await asyncio.wait_for(committer.submit(commands(task("TaskAdded", "q", "tq"))), 5)
        assert other.accepted
        assert not added.done() and not completed.done()
        log.release.set()
        assert (await added).accepted
        reply = await completed
        assert reply.accepted, reply.error
        p_events = [
            (decode_stored(m.data).type, decode_stored(m.data).data.task_id)
            for m in await EventLog(nc).read_subject("milestones.events.p.m")
            if decode_stored(m.data).type.startswith("Task")
        ]
        assert p_events[-2:] == [("TaskAdded", "ta"), ("TaskCompleted", "ta")]
        # after the setup: q's round landed first, then round n again with what waited for it
        landed = [
            next(s for s in subjects if s.startswith("milestones.events."))
            for subjects in log.appended[-2:]
        ]
        assert landed == ["milestones.events.q.m", "milestones.events.p.m"]
    finally:
        await committer.stop()


async def test_stop_answers_the_units_of_a_round_in_flight(settings, nc):
    await prepare_streams(nc, settings)
    log = FailingRound(nc, AppendFailed("never answered"))
    committer = Committer(log)
    await committer.start()
    for ce in plan_project("p", "m"):
        assert (await committer.submit(commands(ce))).accepted
    log.armed = True
    pending = asyncio.create_task(committer.submit(commands(task("TaskAdded", "p", "ta"))))
    await asyncio.wait_for(log.reached.wait(), 5)
    await committer.stop()
    reply = await asyncio.wait_for(pending, 5)
    assert not reply.accepted and reply.error.code == "unavailable"


# -- the pure rule: what two rounds in flight must not share --------------------------------------
def test_a_milestone_belongs_to_its_project_and_a_receipt_to_itself():
    assert aggregate_key("milestones.events.p") == "milestones.events.p"
    assert aggregate_key("milestones.events.p.m") == "milestones.events.p"
    assert aggregate_key("milestones.ids.abc") == "milestones.ids.abc"
    assert aggregate_key("milestones.events.p.m.x") == "milestones.events.p"
    assert aggregate_key("milestones.events") == "milestones.events"


def test_a_unit_holds_its_project_and_its_receipt():
    [cmd] = commands(task("TaskAdded", "p", "ta"))
    keys = unit_keys([cmd], ["milestones.ids.r1"])
    assert "milestones.events.p" in keys and "milestones.ids.r1" in keys
    assert not any(k.startswith("milestones.events.q") for k in keys)
    assert unit_keys([cmd], ["milestones.ids.r1"], [domain.plan(cmd.fact)]) == keys


def test_units_sharing_a_project_with_a_round_in_flight_wait_in_arrival_order():
    keys = {"a": frozenset({"P"}), "b": frozenset({"Q"}), "c": frozenset({"P", "R"})}
    free, wait = free_of(["a", "b", "c"], frozenset({"P"}), keys.__getitem__)
    assert (free, wait) == (["b"], ["a", "c"])
    assert free_of(["a", "c"], frozenset(), keys.__getitem__) == (["a", "c"], [])
