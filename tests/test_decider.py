"""The deciders as specifications: given past events, when a message, then new events (or a
refusal)."""

from __future__ import annotations

import datetime as dt

import pytest

from events import (
    BaselineSet,
    DeadlineReached,
    DependencyAdded,
    DependencyRemoved,
    DependencyViolated,
    MilestoneAchieved,
    MilestoneCancelled,
    MilestoneMissed,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    StatusReported,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
    milestone_subject,
    project_subject,
    stream_subject,
)
from events.common import Event
from events.errors import Rejected
from services import domain

P = "apollo"
T0 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)


class Spec:
    """given([...]).when(msg).then([...]) / .rejects(code, text)."""

    def __init__(self, history: list[Event]) -> None:
        self.history = history

    def when(self, msg: Event) -> Spec:
        self.msg = domain.stamp(msg, T0)
        return self

    def _decide(self) -> list[Event]:
        p = domain.plan(self.msg)
        subjects = {p.target, *p.reads}
        subjects |= {
            stream_subject(e)
            for e in self.history
            if p.all_milestones_of or p.milestones_if_dependent
        }
        states = {s: domain.initial_state(s) for s in subjects}
        for event in self.history:
            s = stream_subject(event)
            if s in states:
                states[s] = domain.evolve(states[s], event)
        return [event for event, _cause in domain.decide_traced(self.msg, states)]

    def then(self, expected: list[Event]) -> None:
        assert self._decide() == expected

    def rejects(self, code: str, text: str) -> None:
        with pytest.raises(Rejected) as info:
            self._decide()
        assert info.value.code == code
        assert text in info.value.message


def given(*history: Event) -> Spec:
    return Spec(list(history))


created = ProjectCreated(project_id=P, name="Apollo")


def planned(
    m: str = "m1", kind: str = "event", due: dt.date = dt.date(2026, 12, 1)
) -> MilestonePlanned:
    return MilestonePlanned(project_id=P, milestone_id=m, name=m.upper(), kind=kind, due=due)  # type: ignore[arg-type]


def task(t: str, m: str = "m1", check: str | None = None) -> TaskAdded:
    return TaskAdded(project_id=P, milestone_id=m, task_id=t, title=f"task {t}", check=check)


def done(t: str, m: str = "m1", result: str | None = None) -> TaskCompleted:
    return TaskCompleted(project_id=P, milestone_id=m, task_id=t, result=result)  # type: ignore[arg-type]


def done_at(t: str, m: str = "m1", result: str | None = None) -> TaskCompleted:
    return TaskCompleted(project_id=P, milestone_id=m, task_id=t, completed_at=T0, result=result)  # type: ignore[arg-type]


def achieved(m: str = "m1", evidence: str | None = None) -> MilestoneAchieved:
    return MilestoneAchieved(project_id=P, milestone_id=m, achieved_at=T0, evidence=evidence)


# -- planning -------------------------------------------------------------------------------------
def test_a_milestone_needs_its_project():
    given().when(planned()).rejects("not_found", "send ProjectCreated first")


def test_planning_a_milestone():
    given(created).when(planned()).then([planned()])


def test_planning_twice_is_a_conflict():
    given(created, planned()).when(planned()).rejects("conflict", "use MilestoneRescheduled")


def test_creating_a_project_twice_is_a_conflict():
    given(created).when(created).rejects("conflict", "already exists")


def test_tasks_need_a_planned_milestone():
    given(created).when(task("t1")).rejects("not_found", "send MilestonePlanned first")


def test_adding_the_same_task_again_changes_nothing_but_another_title_conflicts():
    given(created, planned(), task("t1")).when(task("t1")).then([])
    other = TaskAdded(project_id=P, milestone_id="m1", task_id="t1", title="else")
    given(created, planned(), task("t1")).when(other).rejects("conflict", "another title")


# -- tracking --------------------------------------------------------------------------------------
def test_completing_an_unknown_task():
    given(created, planned(), task("t1")).when(done("t9")).rejects(
        "not_found", "task t9 is not part of milestone m1"
    )


def test_completing_a_completed_task_changes_nothing():
    given(created, planned(), task("t1"), task("t2"), done_at("t1")).when(done("t1")).then([])


def test_completion_time_defaults_to_the_message_time():
    given(created, planned(), task("t1"), task("t2")).when(done("t1")).then([done_at("t1")])


def test_last_task_of_an_event_milestone_achieves_it():
    given(created, planned(), task("t1"), task("t2"), done_at("t1")).when(done("t2")).then(
        [done_at("t2"), achieved(evidence="all tasks completed")]
    )


def test_last_task_of_a_time_milestone_does_not_achieve_it_early():
    given(created, planned(kind="time"), task("t1")).when(done("t1")).then([done_at("t1")])


def test_technical_milestone_needs_passing_checks():
    history = [created, planned(kind="technical"), task("t1", check="pytest"), task("t2")]
    given(*history).when(done("t1")).rejects("invalid", "report result 'passed' or 'failed'")
    given(*history, done_at("t2")).when(done("t1", result="failed")).then(
        [done_at("t1", result="failed")]
    )
    given(*history, done_at("t2"), done_at("t1", result="failed")).when(
        done("t1", result="passed")
    ).then([done_at("t1", result="passed"), achieved(evidence="all checks passed")])


def test_technical_milestone_refuses_a_reported_achievement_with_unmet_criteria():
    given(created, planned(kind="technical"), task("t1", check="ci")).when(achieved()).rejects(
        "rejected", "unmet criteria (t1)"
    )


def test_reopening():
    history = [created, planned(), task("t1"), task("t2"), done_at("t1")]
    reopen = TaskReopened(project_id=P, milestone_id="m1", task_id="t1", reason="bug")
    given(*history).when(reopen).then([reopen])
    given(created, planned(), task("t1"), task("t2")).when(reopen).then([])


# -- rescheduling ----------------------------------------------------------------------------------
def test_rescheduling_records_the_old_date():
    move = MilestoneRescheduled(
        project_id=P, milestone_id="m1", new_due=dt.date(2027, 1, 15), reason="vendor late"
    )
    given(created, planned()).when(move).then(
        [
            MilestoneRescheduled(
                project_id=P,
                milestone_id="m1",
                new_due=dt.date(2027, 1, 15),
                reason="vendor late",
                old_due=dt.date(2026, 12, 1),
            )
        ]
    )


def test_rescheduling_needs_a_new_date_and_a_real_reason():
    same = MilestoneRescheduled(
        project_id=P, milestone_id="m1", new_due=dt.date(2026, 12, 1), reason="x"
    )
    given(created, planned()).when(same).then([])
    blank = MilestoneRescheduled(
        project_id=P, milestone_id="m1", new_due=dt.date(2027, 1, 1), reason="   "
    )
    given(created, planned()).when(blank).rejects("invalid", "reason must say why")


def test_rescheduling_an_unplanned_milestone():
    move = MilestoneRescheduled(
        project_id=P, milestone_id="m9", new_due=dt.date(2027, 1, 1), reason="x"
    )
    given(created).when(move).rejects("not_found", "milestone m9 of project apollo is not planned")


# -- closed milestones -----------------------------------------------------------------------------
def test_an_achieved_milestone_refuses_changes_but_records_late_completions():
    history = [created, planned(), task("t1"), task("t2"), achieved()]
    move = MilestoneRescheduled(
        project_id=P, milestone_id="m1", new_due=dt.date(2027, 1, 1), reason="x"
    )
    given(*history).when(move).rejects("rejected", "is achieved: it cannot be rescheduled")
    given(*history).when(task("t3")).rejects("rejected", "cannot take new tasks")
    given(*history).when(done("t1")).then([done_at("t1")])  # bookkeeping, no second achievement
    given(*history).when(achieved()).then([])
    given(*history).when(MilestoneCancelled(project_id=P, milestone_id="m1", reason="x")).rejects(
        "rejected", "cannot be cancelled"
    )


def test_a_cancelled_milestone_refuses_everything():
    cancel = MilestoneCancelled(project_id=P, milestone_id="m1", reason="descoped")
    history = [created, planned(), task("t1"), cancel]
    given(*history).when(done("t1")).rejects("rejected", "is cancelled")
    given(*history).when(achieved()).rejects("rejected", "is cancelled")
    given(*history).when(cancel).then([])


# -- project: dependencies, baselines, status ------------------------------------------------------
def dep(m: str, d: str, lag: int = 0) -> DependencyAdded:
    return DependencyAdded(project_id=P, milestone_id=m, depends_on=d, lag_days=lag)


def test_dependencies_need_planned_milestones_and_reject_cycles_with_the_path():
    history = [created, planned("a"), planned("b"), planned("c")]
    given(*history).when(dep("b", "a")).then([dep("b", "a")])
    given(*history).when(dep("b", "zz")).rejects("not_found", "milestone zz is not planned")
    given(*history).when(dep("a", "a")).rejects("invalid", "cannot depend on itself")
    given(*history, dep("b", "a"), dep("c", "b")).when(dep("a", "c")).rejects(
        "rejected", "cycle: a -> c -> b -> a"
    )
    given(*history, dep("b", "a", 2)).when(dep("b", "a", 2)).then([])


def test_removing_a_missing_dependency():
    rm = DependencyRemoved(project_id=P, milestone_id="b", depends_on="a")
    given(created, planned("a"), planned("b")).when(rm).rejects("not_found", "does not depend on a")


def test_a_baseline_snapshots_current_due_dates():
    move = MilestoneRescheduled(
        project_id=P,
        milestone_id="b",
        new_due=dt.date(2027, 2, 1),
        reason="x",
        old_due=dt.date(2026, 12, 1),
    )
    history = [created, planned("a"), planned("b"), move]
    given(*history).when(BaselineSet(project_id=P, name="v1")).then(
        [
            BaselineSet(
                project_id=P,
                name="v1",
                planned={"a": dt.date(2026, 12, 1), "b": dt.date(2027, 2, 1)},
            )
        ]
    )
    given(*history, BaselineSet(project_id=P, name="v1")).when(
        BaselineSet(project_id=P, name="v1")
    ).rejects("conflict", "choose a new name")


def test_status_reports_need_the_project():
    report = StatusReported(project_id=P, health="at_risk", note="supplier slow")
    given().when(report).rejects("not_found", "send ProjectCreated first")
    given(created).when(report).then([report])


def test_subjects_follow_the_aggregate():
    assert stream_subject(planned()) == milestone_subject(P, "m1") == "milestones.events.apollo.m1"
    assert stream_subject(dep("b", "a")) == project_subject(P) == "milestones.events.apollo"


# -- time passing is an event: DeadlineReached -----------------------------------------------------
DUE = dt.date(2026, 12, 1)


def deadline(m: str = "m1", due: dt.date = DUE) -> DeadlineReached:
    return DeadlineReached(project_id=P, milestone_id=m, due=due)


def reached(m: str = "m1", due: dt.date = DUE) -> DeadlineReached:
    return DeadlineReached(project_id=P, milestone_id=m, due=due, reached_at=T0)


def test_a_time_milestone_with_its_tasks_done_is_achieved_when_its_date_arrives():
    given(created, planned(kind="time"), task("a"), done("a")).when(deadline()).then(
        [
            reached(),
            MilestoneAchieved(
                project_id=P,
                milestone_id="m1",
                achieved_at=T0,
                evidence="every task done by 2026-12-01",
            ),
        ]
    )


def test_a_time_milestone_with_open_tasks_is_missed_when_its_date_arrives():
    given(created, planned(kind="time"), task("a"), task("b"), done("a")).when(deadline()).then(
        [reached(), MilestoneMissed(project_id=P, milestone_id="m1", due=DUE, open_tasks=["b"])]
    )


def test_a_time_milestone_whose_check_failed_is_missed():
    given(created, planned(kind="time"), task("a", check="suite"), done("a", result="failed")).when(
        deadline()
    ).then([reached(), MilestoneMissed(project_id=P, milestone_id="m1", due=DUE, open_tasks=["a"])])


def test_completing_the_tasks_of_a_time_milestone_does_not_achieve_it_early():
    given(created, planned(kind="time"), task("a")).when(done("a")).then(
        [TaskCompleted(project_id=P, milestone_id="m1", task_id="a", completed_at=T0)]
    )


def test_an_event_or_technical_milestone_not_achieved_by_its_date_is_missed():
    for kind in ("event", "technical"):
        given(created, planned(kind=kind), task("a")).when(deadline()).then(
            [reached(), MilestoneMissed(project_id=P, milestone_id="m1", due=DUE, open_tasks=["a"])]
        )


def test_a_deadline_a_reschedule_replaced_or_a_repeat_or_a_closed_milestone_changes_nothing():
    moved = MilestoneRescheduled(
        project_id=P, milestone_id="m1", new_due=dt.date(2027, 1, 15), reason="r", old_due=DUE
    )
    given(created, planned(kind="time"), task("a"), moved).when(deadline()).then([])
    missed = MilestoneMissed(project_id=P, milestone_id="m1", due=DUE, open_tasks=["a"])
    given(created, planned(kind="time"), task("a"), reached(), missed).when(deadline()).then([])
    achieved = MilestoneAchieved(project_id=P, milestone_id="m1", achieved_at=T0)
    given(created, planned(), achieved).when(deadline()).then([])
    cancelled = MilestoneCancelled(project_id=P, milestone_id="m1", reason="r")
    given(created, planned(), cancelled).when(deadline()).then([])


def test_a_missed_milestone_can_still_be_achieved_late_or_rescheduled_and_missed_again():
    missed = MilestoneMissed(project_id=P, milestone_id="m1", due=DUE, open_tasks=["a"])
    history = [created, planned(kind="event"), task("a"), reached(), missed]
    given(*history).when(done("a")).then(
        [
            TaskCompleted(project_id=P, milestone_id="m1", task_id="a", completed_at=T0),
            MilestoneAchieved(
                project_id=P, milestone_id="m1", achieved_at=T0, evidence="all tasks completed"
            ),
        ]
    )
    later = dt.date(2027, 1, 15)
    moved = MilestoneRescheduled(
        project_id=P, milestone_id="m1", new_due=later, reason="r", old_due=DUE
    )
    given(*history, moved).when(deadline(due=later)).then(
        [
            DeadlineReached(project_id=P, milestone_id="m1", due=later, reached_at=T0),
            MilestoneMissed(project_id=P, milestone_id="m1", due=later, open_tasks=["a"]),
        ]
    )


def test_a_deadline_for_an_unplanned_milestone_is_not_found():
    given(created).when(deadline()).rejects("not_found", "not planned")


# -- dependencies: violation and the shift policy ----------------------------------------------
def d(day: int, month: int = 12) -> dt.date:
    return dt.date(2026, month, day)


def moved(
    m: str, new_due: dt.date, old_due: dt.date, reason: str = "vendor late"
) -> MilestoneRescheduled:
    return MilestoneRescheduled(
        project_id=P, milestone_id=m, new_due=new_due, reason=reason, old_due=old_due
    )


def chain(policy: str = "notify") -> list[Event]:
    """design (Dec 1) -> build (Dec 10, lag 2) -> launch (Dec 20, lag 0); review (Dec 30) after
    design."""
    return [
        ProjectCreated(project_id=P, name="Apollo", dependency_policy=policy),  # type: ignore[arg-type]
        planned("design", due=d(1)),
        planned("build", due=d(10)),
        planned("launch", due=d(20)),
        planned("review", due=d(30)),
        dep("build", "design", 2),
        dep("launch", "build"),
        dep("review", "design"),
    ]


def violated(m: str, pred: str, finish: dt.date, lag: int, due: dt.date) -> DependencyViolated:
    return DependencyViolated(
        project_id=P,
        milestone_id=m,
        depends_on=pred,
        predecessor_finish=finish,
        lag_days=lag,
        due=due,
        earliest=finish + dt.timedelta(days=lag),
    )


def traced(history: list[Event], msg: Event) -> list[tuple[Event, int | None]]:
    spec = given(*history).when(msg)
    p = domain.plan(spec.msg)
    states = {
        s: domain.initial_state(s)
        for s in {p.target, *p.reads, *(stream_subject(e) for e in history)}
    }
    for event in history:
        states[stream_subject(event)] = domain.evolve(states[stream_subject(event)], event)
    return domain.decide_traced(spec.msg, states)


def test_a_predecessor_moved_past_what_its_successor_allows_violates_the_dependency():
    when = MilestoneRescheduled(
        project_id=P, milestone_id="design", new_due=d(9), reason="vendor late"
    )
    given(*chain()).when(when).then(
        [moved("design", d(9), d(1)), violated("build", "design", d(9), 2, d(10))]
    )


def test_a_move_within_the_slack_violates_nothing():
    when = MilestoneRescheduled(
        project_id=P, milestone_id="design", new_due=d(8), reason="vendor late"
    )
    given(*chain()).when(when).then(
        [moved("design", d(8), d(1))]
    )  # 8 + 2 = 10: build is still fine


def test_the_same_violation_is_reported_once_and_a_new_one_again():
    history = [*chain(), moved("design", d(9), d(1)), violated("build", "design", d(9), 2, d(10))]
    given(*history).when(
        MilestoneRescheduled(project_id=P, milestone_id="design", new_due=d(12), reason="again")
    ).then([moved("design", d(12), d(9), "again"), violated("build", "design", d(12), 2, d(10))])


def test_a_successor_moved_before_its_predecessor_allows_is_violated_itself():
    when = MilestoneRescheduled(
        project_id=P, milestone_id="build", new_due=d(2), reason="pulled in"
    )
    given(*chain()).when(when).then(
        [moved("build", d(2), d(10), "pulled in"), violated("build", "design", d(1), 2, d(2))]
    )


def test_adding_a_dependency_that_is_already_violated_says_so():
    history = [created, planned("a", due=d(10)), planned("b", due=d(5))]
    given(*history).when(dep("b", "a", 1)).then(
        [dep("b", "a", 1), violated("b", "a", d(10), 1, d(5))]
    )


def test_shift_policy_reschedules_the_whole_downstream_chain_each_caused_by_its_predecessor():
    when = MilestoneRescheduled(
        project_id=P, milestone_id="design", new_due=d(15), reason="vendor late"
    )
    events = traced(chain("shift"), when)
    # build moves to Dec 17 (15 + 2); launch (Dec 20, lag 0) and review (Dec 30) still fit
    assert events == [
        (moved("design", d(15), d(1)), None),
        (
            moved(
                "build",
                d(17),
                d(10),
                "shifted by dependency: design finishes 2026-12-15 + 2 days lag",
            ),
            0,
        ),
    ]
    later = traced(
        chain("shift"),
        MilestoneRescheduled(project_id=P, milestone_id="design", new_due=d(20), reason="x"),
    )
    assert [(e.milestone_id, e.new_due, cause) for e, cause in later] == [  # type: ignore[attr-defined]
        ("design", d(20), None),
        ("build", d(22), 0),
        ("launch", d(22), 1),
    ]


def test_shift_cascades_and_takes_the_latest_predecessor():
    history = [
        ProjectCreated(project_id=P, name="Apollo", dependency_policy="shift"),
        planned("a", due=d(1)),
        planned("b", due=d(5)),
        planned("c", due=d(6)),
        planned("x", due=d(8)),
        dep("b", "a", 1),
        dep("c", "b", 1),
        dep("c", "x", 0),
    ]
    events = traced(
        history, MilestoneRescheduled(project_id=P, milestone_id="a", new_due=d(10), reason="slip")
    )
    assert [(e.milestone_id, e.old_due, e.new_due, cause) for e, cause in events] == [  # type: ignore[attr-defined]
        ("a", d(1), d(10), None),
        ("b", d(5), d(11), 0),
        ("c", d(6), d(12), 1),
    ]
    # had x bound c (x + 0 = Dec 8 > b + 1), the move of a would not have moved it
    assert "b finishes 2026-12-11 + 1 days lag" in events[2][0].reason  # type: ignore[attr-defined]


def test_shift_never_moves_closed_milestones_and_never_overrides_an_explicit_early_date():
    history = [*chain("shift"), achieved("build")]
    events = traced(
        history,
        MilestoneRescheduled(project_id=P, milestone_id="design", new_due=d(15), reason="x"),
    )
    assert [type(e).__name__ for e, _ in events] == ["MilestoneRescheduled"]
    early = traced(
        chain("shift"),
        MilestoneRescheduled(project_id=P, milestone_id="build", new_due=d(2), reason="y"),
    )
    assert [type(e).__name__ for e, _ in early] == ["MilestoneRescheduled", "DependencyViolated"]


def test_derived_events_are_caused_by_the_fact_they_follow():
    history = [created, planned("m1"), task("a")]
    assert [cause for _, cause in traced(history, done("a"))] == [None, 0]
    assert [cause for _, cause in traced([*chain()], moved("design", d(9), d(1)))] == [None, 0]


def test_a_time_milestone_missed_only_because_its_last_report_came_late_is_achieved_when_done():
    history = [
        created,
        planned("m1", kind="time", due=DUE),
        task("a", "m1"),
        reached(),
        MilestoneMissed(project_id=P, milestone_id="m1", due=DUE, open_tasks=["a"]),
    ]
    in_time = dt.datetime(2026, 11, 30, 17, tzinfo=dt.UTC)
    when = TaskCompleted(project_id=P, milestone_id="m1", task_id="a", completed_at=in_time)
    given(*history).when(when).then(
        [
            when,
            MilestoneAchieved(
                project_id=P,
                milestone_id="m1",
                achieved_at=in_time,
                evidence="every task done by 2026-12-01, reported after the deadline",
            ),
        ]
    )
    too_late = TaskCompleted(
        project_id=P,
        milestone_id="m1",
        task_id="a",
        completed_at=dt.datetime(2026, 12, 2, tzinfo=dt.UTC),
    )
    given(*history).when(too_late).then([too_late])


def test_unsubscribing_ends_exactly_that_subscription():
    from events import StakeholderSubscribed, StakeholderUnsubscribed

    sub = StakeholderSubscribed(project_id=P, stakeholder="pmo", url="https://pmo.example/hook")
    off = StakeholderUnsubscribed(project_id=P, stakeholder="pmo", url="https://pmo.example/hook")
    given(created, sub).when(off).then([off])
    given(created, sub, off).when(off).rejects(
        "not_found", "pmo is not subscribed to project apollo"
    )
    given(created, sub, off).when(sub).then([sub])  # and can subscribe again
    other = StakeholderUnsubscribed(
        project_id=P, stakeholder="pmo", url="https://pmo.example/hook", milestone_id="m1"
    )
    given(created, planned("m1"), sub).when(other).rejects(
        "not_found", "not subscribed to milestone m1"
    )


def test_a_time_milestone_achieved_at_its_deadline_counts_on_its_due_day():
    midnight_after = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    fired = DeadlineReached(project_id=P, milestone_id="m1", due=DUE, reached_at=midnight_after)
    given(created, planned(kind="time"), task("a"), done("a")).when(fired).then(
        [
            fired,
            MilestoneAchieved(
                project_id=P,
                milestone_id="m1",
                achieved_at=dt.datetime.combine(DUE, dt.time.max, dt.UTC),
                evidence="every task done by 2026-12-01",
            ),
        ]
    )


def test_shift_moves_a_chain_longer_than_the_recursion_limit():
    n = 1500
    history: list[Event] = [ProjectCreated(project_id=P, name="Long", dependency_policy="shift")]
    history += [planned(f"m{i}", due=d(1)) for i in range(n)]
    history += [dep(f"m{i}", f"m{i - 1}") for i in range(1, n)]
    events = traced(
        history, MilestoneRescheduled(project_id=P, milestone_id="m0", new_due=d(5), reason="x")
    )
    assert len(events) == n and events[-1][0].milestone_id == f"m{n - 1}" and events[-1][1] == n - 2


def test_shift_takes_each_successor_after_all_its_moved_predecessors():
    """a -> b -> d and a -> c -> d: d is rescheduled once, after both b and c, to the later of the
    two."""
    history = [
        ProjectCreated(project_id=P, name="Diamond", dependency_policy="shift"),
        planned("a", due=d(1)),
        planned("b", due=d(3)),
        planned("c", due=d(4)),
        planned("x", due=d(5)),
        dep("b", "a", 2),
        dep("c", "a", 3),
        dep("x", "b", 1),
        dep("x", "c", 1),
    ]
    for order in (
        history,
        [*history[:5], dep("x", "c", 1), dep("x", "b", 1), dep("c", "a", 3), dep("b", "a", 2)],
    ):
        events = traced(
            order, MilestoneRescheduled(project_id=P, milestone_id="a", new_due=d(10), reason="x")
        )
        moves = {e.milestone_id: (e.new_due, cause) for e, cause in events}  # type: ignore[attr-defined]
        assert moves["b"][0] == d(12) and moves["c"][0] == d(13) and moves["x"][0] == d(14)
        assert [e.milestone_id for e, _ in events].count("x") == 1  # type: ignore[attr-defined]
        assert events[moves["x"][1]][0].milestone_id == "c"  # type: ignore[attr-defined]  # bound by c


def test_shift_moves_a_successor_only_after_every_moved_predecessor_of_it():
    """a -> k -> m and a -> m directly: m must be judged after k has moved (topological order)."""
    history = [
        ProjectCreated(project_id=P, name="Order", dependency_policy="shift"),
        planned("a", due=d(1)),
        planned("k", due=d(3)),
        planned("m", due=d(9)),
        dep("k", "a", 1),
        dep("m", "a", 1),
        dep("m", "k", 5),
    ]
    events = traced(
        history, MilestoneRescheduled(project_id=P, milestone_id="a", new_due=d(10), reason="x")
    )
    assert [(e.milestone_id, e.new_due) for e, _ in events] == [  # type: ignore[attr-defined]
        ("a", d(10)),
        ("k", d(11)),
        ("m", d(16)),
    ]
