"""The commit round's pure core as specifications, without servers: given a cache and the units
of a round, when the round is planned, decided or answered, then what it reads, what it appends
(ids, correlation, causation, OCC) and what each unit is told."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from events import (
    ENCODER,
    RECEIPT_DECODER,
    STORED_DECODER,
    DependencyAdded,
    EventRef,
    MilestoneAchieved,
    MilestonePlanned,
    ProjectCreated,
    Receipt,
    Reply,
    TaskAdded,
    TaskCompleted,
    milestone_subject,
    project_subject,
    stream_subject,
)
from events.common import Event
from events.subjects import milestones_of
from services import domain
from services.auth.principal import SERVICE
from services.domain.milestone import Milestone
from services.eventlog.log import OutgoingMessage, StoredMessage
from services.intake.parse import Limits, parse
from services.intake.round import (
    Batch,
    Cached,
    Command,
    Known,
    RoundOutcome,
    StateView,
    cache_updates,
    complete_read,
    decide_round,
    envelopes,
    event_id,
    plan_round,
    receipt_subject,
    replies,
)
from tests.conftest import cloudevent

P = "apollo"
M1, M2 = milestone_subject(P, "m1"), milestone_subject(P, "m2")
PROJECT = project_subject(P)
NOW = dt.datetime(2026, 11, 24, 12, 30, tzinfo=dt.UTC)
# Event ids must stay what earlier versions derived: a repeat after an upgrade answers the same.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d3a52-8c1e-4a8e-9a53-2f3d0c1b7e11")


@dataclass
class Unit:
    commands: list[Command]
    receipts: list[str] = field(default_factory=list)
    verify: bool = False


def command(type_: str, data: dict, **envelope: Any) -> Command:
    [cmd] = parse(msgspec.json.encode(cloudevent(type_, data, **envelope)), Limits(), SERVICE)
    return cmd


def unit(*commands: Command, verify: bool = False) -> Unit:
    return Unit(list(commands), [receipt_subject(c.ce) for c in commands], verify)


def given(*history: Event) -> dict[str, Cached]:
    """The cache after ``history`` was appended in order (positions 1, 2, ...)."""
    cache: dict[str, Cached] = {}
    for seq, event in enumerate(history, 1):
        subject = stream_subject(event)
        state = cache[subject].state if subject in cache else domain.initial_state(subject)
        cache[subject] = Cached(domain.evolve(state, event), seq)
    return cache


def planned(*milestones: str, tasks: tuple[str, ...] = ("t1",)) -> list[Event]:
    history: list[Event] = [ProjectCreated(project_id=P, name="Apollo")]
    for m in milestones:
        history.append(
            MilestonePlanned(
                project_id=P, milestone_id=m, name=m, kind="event", due=dt.date(2027, 1, 1)
            )
        )
        history += [TaskAdded(project_id=P, milestone_id=m, task_id=t, title=t) for t in tasks]
    return history


def complete(task: str, milestone: str = "m1", **envelope: Any) -> Command:
    return command(
        "TaskCompleted", {"project_id": P, "milestone_id": milestone, "task_id": task}, **envelope
    )


def add_task(task: str, milestone: str = "m1") -> Command:
    data = {"project_id": P, "milestone_id": milestone, "task_id": task, "title": task}
    return command("TaskAdded", data)


def reschedule(milestone: str = "m1") -> Command:
    data = {"project_id": P, "milestone_id": milestone, "new_due": "2027-02-01", "reason": "late"}
    return command("MilestoneRescheduled", data)


def last_of(cache: dict[str, Cached]) -> dict[str, StoredMessage]:
    """What a full read of the log would answer for every cached subject."""
    return {s: StoredMessage(c.seq, s, b"") for s, c in cache.items()}


def receipt_at(seq: int, cmd: Command, events: list[tuple[str, str]]) -> StoredMessage:
    ce = cmd.ce
    body = Receipt(source=ce.source, id=ce.id, type=ce.type, events=events)
    return StoredMessage(seq, receipt_subject(ce), ENCODER.encode(body))


def decide(
    units: list[Unit], cache: dict[str, Cached], max_messages: int = 1000
) -> RoundOutcome[Unit]:
    """A whole round as the committer runs it, with ``cache`` standing for the log's answers."""
    plan = plan_round(units, cache)
    answers = {s: m for s, m in last_of(cache).items() if s in plan.to_read}
    last, _ = complete_read(plan, answers, cache)
    return decide_round(units, plan, last, {}, cache, NOW, max_messages)


# -- what a round reads ----------------------------------------------------------------------------
def test_a_fast_round_trusts_cached_subjects_and_reads_no_receipts():
    cache = given(*planned("m1", tasks=("t1", "t2")))
    plan = plan_round([unit(complete("t1")), unit(add_task("x", "m9"))], cache)
    assert plan.fast
    assert plan.trusted == {M1}
    assert plan.to_read == [milestone_subject(P, "m9")]  # not cached: read it


def test_a_verifying_unit_makes_the_round_read_receipts_and_every_subject():
    cache = given(*planned("m1", tasks=("t1", "t2")))
    units = [unit(complete("t1")), unit(complete("t2"), verify=True)]
    plan = plan_round(units, cache)
    assert not plan.fast and plan.trusted == set()
    assert sorted(plan.to_read) == sorted([*units[0].receipts, *units[1].receipts, M1])


def test_a_subject_read_without_being_written_is_never_trusted():
    cache = given(*planned("m1"))
    plan_m2 = {"project_id": P, "milestone_id": "m2", "name": "m2", "kind": "time"}
    when = command("MilestonePlanned", {**plan_m2, "due": "2027-03-01"})
    plan = plan_round([unit(when)], cache)
    assert PROJECT in cache and PROJECT not in plan.trusted
    assert set(plan.to_read) == {PROJECT, M2}


def test_a_reschedule_reads_the_milestones_only_of_a_project_with_dependencies():
    without = given(*planned("m1", "m2"))
    with_deps = given(
        *planned("m1", "m2"), DependencyAdded(project_id=P, milestone_id="m2", depends_on="m1")
    )
    everything = {milestones_of(P)}
    assert plan_round([unit(reschedule())], without).wildcards == set()
    assert plan_round([unit(reschedule())], with_deps).wildcards == everything
    assert plan_round([unit(reschedule())], {}).wildcards == everything  # not cached
    assert plan_round([unit(reschedule(), verify=True)], without).wildcards == everything


def test_a_wildcards_fresh_answer_wins_over_the_cache():
    cache = given(*planned("m1", "m2"))
    cache[M1] = Cached(cache[M1].state, 3)  # stale: another process wrote m1 since
    when = command("DependencyAdded", {"project_id": P, "milestone_id": "m2", "depends_on": "m1"})
    plan = plan_round([unit(when), unit(add_task("t9"))], cache)
    assert plan.wildcards == {milestones_of(P)} and plan.trusted == {PROJECT, M1}
    fresh = {M1: StoredMessage(9, M1, b"x"), M2: StoredMessage(cache[M2].seq, M2, b"x")}
    last, refresh = complete_read(plan, fresh, cache)
    assert last[M1].seq == 9  # not the cache's 3
    assert last[PROJECT].seq == cache[PROJECT].seq  # trusted, not read
    assert refresh == {PROJECT, M1, M2}  # the milestones the wildcard found are refreshed too


# -- how decisions become stored envelopes ---------------------------------------------------------
def test_envelopes_carry_ids_correlation_causation_and_the_recorded_time():
    cache = given(*planned("m1", tasks=("t1",)))
    cmd = complete("t1", id="ce-1", source="tracker", actor="ada")
    traced = domain.decide_traced(domain.stamp(cmd.fact, cmd.ce.time), {M1: cache[M1].state})
    messages, refs = envelopes(cmd, receipt_subject(cmd.ce), traced, NOW)

    ids = [str(uuid.uuid5(EVENT_ID_NAMESPACE, f"tracker\nce-1\n{i}")) for i in (0, 1)]
    assert refs == [("TaskCompleted", ids[0], M1), ("MilestoneAchieved", ids[1], M1)]
    receipt, *stored = messages
    assert (receipt.subject, receipt.expected_last_seq) == (receipt_subject(cmd.ce), 0)
    assert RECEIPT_DECODER.decode(receipt.data).events == [
        ("TaskCompleted", ids[0]),
        ("MilestoneAchieved", ids[1]),
    ]
    assert [m.expected_last_seq for m in stored] == [None, None]  # the batch decides OCC
    done, achieved = (STORED_DECODER.decode(m.data) for m in stored)
    assert isinstance(done.data, TaskCompleted) and isinstance(achieved.data, MilestoneAchieved)
    assert [e.id for e in (done, achieved)] == ids
    assert done.causationid == "ce-1"  # the message's own fact is caused by the message
    assert achieved.causationid == ids[0]  # the derived event by the TaskCompleted
    assert {e.correlationid for e in (done, achieved)} == {"ce-1"}
    assert {e.recordedtime for e in (done, achieved)} == {NOW}
    assert done.time == cmd.ce.time != NOW
    assert {(e.subject, e.actor, e.source) for e in (done, achieved)} == {(M1, "ada", "tracker")}


def test_an_inbound_correlation_id_is_kept():
    cache = given(*planned("m1", tasks=("t1", "t2")))
    cmd = complete("t1", correlationid="sprint-7")
    traced = domain.decide_traced(domain.stamp(cmd.fact, cmd.ce.time), {M1: cache[M1].state})
    [_receipt, event], _ = envelopes(cmd, receipt_subject(cmd.ce), traced, NOW)
    assert STORED_DECODER.decode(event.data).correlationid == "sprint-7"
    assert event_id(cmd.ce, 0) == STORED_DECODER.decode(event.data).id


def test_event_ids_are_the_uuid5_of_source_id_and_index():
    """``event_id`` formats the UUID itself (cheaper per event): the ids stay RFC 4122 UUIDv5s,
    the very ones of earlier versions, so a repeat decided again gets the same ids."""
    ns = uuid.UUID("6f1d3a52-8c1e-4a8e-9a53-2f3d0c1b7e11")
    for source, id_ in [("tracker", "ce-1"), ("src/é€", "id with spaces\n"), ("", "")]:
        ce = msgspec.structs.replace(complete("t1").ce, source=source, id=id_)
        for index in (0, 1, 17):
            expected = uuid.uuid5(ns, f"{source}\n{id_}\n{index}")
            assert event_id(ce, index) == str(expected)
            assert uuid.UUID(event_id(ce, index)).version == 5


def test_only_the_first_message_of_a_subject_in_a_batch_states_its_expected_sequence():
    batch = Batch()
    last = {M1: StoredMessage(7, M1, b"")}
    batch.add(
        [
            OutgoingMessage("milestones.ids.a", b"r", 0),
            OutgoingMessage(M1, b"1"),
            OutgoingMessage(M1, b"2"),
        ],
        last,
    )
    batch.add([OutgoingMessage("milestones.ids.b", b"r", 0), OutgoingMessage(M1, b"3")], last)
    batch.add([OutgoingMessage(M2, b"4")], last)
    assert [(m.subject, m.expected_last_seq) for m in batch.messages] == [
        ("milestones.ids.a", 0),
        (M1, 7),
        (M1, None),
        ("milestones.ids.b", 0),
        (M1, None),
        (M2, 0),  # nothing there yet
    ]


# -- a round -----------------------------------------------------------------------------------
def test_units_on_one_aggregate_see_each_others_effects_in_one_batch():
    cache = given(*planned("m1", tasks=("t1",)))
    first, second = unit(add_task("t2")), unit(complete("t2"))
    outcome = decide([first, second], cache)
    assert [u for u, _ in outcome.accepted] == [first, second] and not outcome.answered
    assert [(m.subject, m.expected_last_seq) for m in outcome.batch.messages] == [
        (first.receipts[0], 0),
        (M1, cache[M1].seq),
        (second.receipts[0], 0),
        (M1, None),
    ]
    working = outcome.working[M1]
    assert isinstance(working, Milestone) and working.tasks["t2"].done


def test_the_state_a_decision_sees_is_the_units_own_then_the_rounds_then_the_cache():
    cache = given(*planned("m1", "m2"))
    working = {M2: Milestone(project_id=P, milestone_id="m2", name="in the round")}
    view = StateView(working, cache)
    view.overlay[M1] = Milestone(project_id=P, milestone_id="m1", name="this unit")
    assert [view.state(s).name for s in (M1, M2)] == ["this unit", "in the round"]
    assert view.state(PROJECT) is cache[PROJECT].state
    assert view.state(milestone_subject(P, "new")) == domain.initial_state(
        milestone_subject(P, "new")
    )


def test_dependencies_that_appeared_since_the_plan_defer_a_reschedule_to_a_full_read():
    cache = given(*planned("m1", "m2"))
    units = [unit(reschedule())]
    plan = plan_round(units, cache)
    assert plan.wildcards == set()  # the cache said: no dependencies
    deps = DependencyAdded(project_id=P, milestone_id="m2", depends_on="m1")
    refreshed = {**cache, PROJECT: Cached(domain.evolve(cache[PROJECT].state, deps), 99)}
    last, _ = complete_read(plan, last_of(refreshed), refreshed)
    outcome = decide_round(units, plan, last, {}, refreshed, NOW, 1000)
    assert outcome.deferred == units and outcome.verify == units
    assert not outcome.batch.messages


def test_the_same_cloudevent_twice_in_one_round_is_answered_next_round():
    cache = given(*planned("m1", tasks=("t1", "t2")))
    cmd = complete("t1")
    first, again = unit(cmd), unit(cmd)
    outcome = decide([first, again], cache)
    assert [u for u, _ in outcome.accepted] == [first]
    assert outcome.deferred == [again] and outcome.verify == []


def test_a_refusal_in_a_fast_round_is_verified_before_it_is_answered():
    cache = given(*planned("m1"))
    unknown_task = unit(complete("nope"))
    fast = decide([unknown_task], cache)
    assert fast.verify == [unknown_task] and not fast.answered  # it may be a repeat
    unknown_task.verify = True
    full = decide([unknown_task], cache)
    [(_, reply)] = full.answered
    assert reply.error is not None and reply.error.code == "not_found"


def test_a_refusal_in_a_batch_names_the_event_refused():
    cache = given(*planned("m1"))
    bad = complete("nope", id="second")
    batch = unit(add_task("t2"), bad, verify=True)
    [(_, reply)] = decide([batch], cache).answered
    assert reply.error is not None and reply.error.message.startswith("event #2 (id second): ")


def test_a_repeat_is_answered_from_its_receipt():
    cache = given(*planned("m1"))
    cmd = complete("t1")
    repeat = unit(cmd, verify=True)
    plan = plan_round([repeat], cache)
    last = {**last_of(cache), repeat.receipts[0]: receipt_at(40, cmd, [("TaskCompleted", "e1")])}
    outcome = decide_round([repeat], plan, last, {}, cache, NOW, 1000)
    assert outcome.answered == [(repeat, Reply.ok([EventRef("TaskCompleted", "e1", 41)]))]
    assert not outcome.batch.messages


def test_a_unit_whose_history_cannot_be_read_is_told_so():
    cache = given(*planned("m1"))
    blocked = unit(complete("t1"))
    plan = plan_round([blocked], cache)
    outcome = decide_round([blocked], plan, last_of(cache), {M1: "unreadable m1"}, cache, NOW, 9)
    assert outcome.answered == [(blocked, Reply.fail("unavailable", "unreadable m1"))]


def test_a_batch_that_would_exceed_max_messages_waits_and_one_too_large_alone_is_refused():
    cache = given(*planned("m1", "m2", tasks=("t1",)))
    fits, waits = unit(add_task("t2")), unit(add_task("t3", "m2"))
    outcome = decide([fits, waits], cache, max_messages=3)
    assert [u for u, _ in outcome.accepted] == [fits] and outcome.deferred == [waits]
    assert len(outcome.batch.messages) == 2

    achieving = unit(complete("t1"))  # receipt + TaskCompleted + MilestoneAchieved
    [(_, reply)] = decide([achieving], cache, max_messages=2).answered
    assert reply.error is not None and reply.error.code == "too_large"
    assert "needs 3 log messages; at most 2 fit" in reply.error.message


# -- positions become replies ----------------------------------------------------------------------
def test_positions_become_replies_a_receipt_before_its_events():
    one = unit(complete("t1"))
    two = unit(complete("t2", id="seen"), add_task("t3"))
    refs_one = [[("TaskCompleted", "a", M1), ("MilestoneAchieved", "b", M1)]]
    refs_two = [None, [("TaskAdded", "c", M1)]]  # the first command was handled before
    last = {two.receipts[0]: receipt_at(40, two.commands[0], [("TaskCompleted", "old")])}
    # the batch: receipt, a, b (one) then receipt, c (two) at positions 101..105
    answered = replies([(one, refs_one), (two, refs_two)], last_seq=105, appended=5, last=last)
    assert answered == [
        Reply.ok([EventRef("TaskCompleted", "a", 102), EventRef("MilestoneAchieved", "b", 103)]),
        Reply.ok([EventRef("TaskCompleted", "old", 41), EventRef("TaskAdded", "c", 105)]),
    ]


def test_the_cache_learns_each_decided_subject_at_its_last_position_in_the_batch():
    state = domain.initial_state(M1)
    messages = [
        OutgoingMessage("milestones.ids.a", b"", 0),
        OutgoingMessage(M1, b"", 4),
        OutgoingMessage("milestones.ids.b", b"", 0),
        OutgoingMessage(M1, b""),
    ]
    updates = cache_updates(messages, last_seq=20, working={M1: state})
    assert updates == [(M1, Cached(state, 20))]  # receipts are not aggregates


def test_a_round_knows_a_projects_milestones_read_and_decided_and_no_others() -> None:
    """What a plan over all of a project's milestones finds: those the round read, those its
    accepted units decided (before or after the index is first made), never another project's
    or a non-milestone subject."""
    other = milestone_subject("apollo2", "m9")
    receipt = "milestones.receipts.0123456789abcdef"
    last = {s: StoredMessage(1, s, b"") for s in (M1, PROJECT, other, receipt)}
    working: dict = {M2: None}
    known = Known(last, working)
    known.add([milestone_subject(P, "early")])  # before the index is made: found via working
    working[milestone_subject(P, "early")] = None
    assert known.milestones(f"{PROJECT}.") == {M1, M2, milestone_subject(P, "early")}
    known.add([milestone_subject(P, "m3"), other, PROJECT])
    assert known.milestones(f"{PROJECT}.") == {
        M1,
        M2,
        milestone_subject(P, "m3"),
        milestone_subject(P, "early"),
    }
    assert known.milestones(f"{project_subject('apollo2')}.") == {other}
    assert known.milestones(f"{project_subject('nobody')}.") == set()
