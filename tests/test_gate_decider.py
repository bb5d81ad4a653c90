"""Decision gates as specifications: given past events, when a message, then new events (or a
refusal). README "Decision gates"."""

from __future__ import annotations

import datetime as dt

from events import (
    ApprovalRequested,
    ApproversSet,
    DeadlineReached,
    MilestoneAchieved,
    MilestoneApprovalRejected,
    MilestoneApproved,
    MilestoneMissed,
    MilestonePlanned,
    TaskAdded,
    TaskCompleted,
    TaskReopened,
)
from events.common import MilestoneKind
from tests.test_decider import T0, P, created, given

M = "launch"
DUE = dt.date(2026, 12, 1)
AT = T0  # what ``Spec.when`` stamps


def gate(
    kind: MilestoneKind = "event", approvers: tuple[str, ...] = ("dana", "lee"), needed=None
) -> MilestonePlanned:
    return MilestonePlanned(
        project_id=P,
        milestone_id=M,
        name="Launch approval",
        kind=kind,
        due=DUE,
        approvers=list(approvers),
        approvals_needed=needed,
    )


def requested(pending=("dana", "lee"), approvers=("dana", "lee"), needed=2) -> ApprovalRequested:
    return ApprovalRequested(
        project_id=P,
        milestone_id=M,
        approvers=list(approvers),
        approvals_needed=needed,
        pending=list(pending),
    )


add = TaskAdded(project_id=P, milestone_id=M, task_id="t1", title="Go/no-go review")
done = TaskCompleted(project_id=P, milestone_id=M, task_id="t1", completed_at=AT)
reopened = TaskReopened(project_id=P, milestone_id=M, task_id="t1")


def approve(who: str | None, meaning: str = "approved for launch") -> MilestoneApproved:
    return MilestoneApproved(project_id=P, milestone_id=M, meaning=meaning, approver=who)


def approved(who: str, meaning: str = "approved for launch") -> MilestoneApproved:
    return MilestoneApproved(
        project_id=P, milestone_id=M, meaning=meaning, approver=who, approved_at=AT
    )


def reject(who: str, reason: str = "load test failed") -> MilestoneApprovalRejected:
    return MilestoneApprovalRejected(project_id=P, milestone_id=M, reason=reason, approver=who)


# a gate whose single task is done and whose request stands
READY = (created, gate(), add, done, requested())


def test_the_last_task_of_a_gate_requests_approval_instead_of_achieving_it():
    given(created, gate(), add).when(done).then([done, requested()])


def test_a_gate_planned_without_tasks_is_requested_at_once_and_a_task_withdraws_it():
    given(created).when(gate()).then([gate(), requested()])
    given(created, gate(), requested(), add).when(done).then([done, requested()])


def test_a_technical_gate_requests_approval_only_when_its_checks_pass():
    check = TaskAdded(project_id=P, milestone_id=M, task_id="t1", title="CI", check="ci")
    failed = TaskCompleted(
        project_id=P, milestone_id=M, task_id="t1", result="failed", completed_at=AT
    )
    passed = TaskCompleted(
        project_id=P, milestone_id=M, task_id="t1", result="passed", completed_at=AT
    )
    given(created, gate("technical"), check).when(failed).then([failed])
    given(created, gate("technical"), check).when(passed).then([passed, requested()])


def test_planned_approvers_must_be_distinct_bounded_and_needed_within_them():
    given(created).when(gate(approvers=("dana", "dana"))).rejects("invalid", "named twice")
    given(created).when(gate(needed=3)).rejects("invalid", "from 1 to the number")
    given(created).when(gate(needed=0)).rejects("invalid", "from 1 to the number")
    many = tuple(f"p{i}" for i in range(21))
    given(created).when(gate(approvers=many)).rejects("invalid", "at most 20")
    given(created).when(gate(approvers=(), needed=1)).rejects("invalid", "without approvers")


def test_an_approval_is_recorded_and_the_last_needed_one_achieves_the_gate():
    given(*READY).when(approve("dana")).then([approved("dana")])
    achieved = MilestoneAchieved(
        project_id=P,
        milestone_id=M,
        achieved_at=AT,
        evidence="approved by dana, lee: approved for launch; ship it",
    )
    given(*READY, approved("dana")).when(approve("lee", "ship it")).then(
        [approved("lee", "ship it"), achieved]
    )


def test_one_of_two_needed():
    history = (created, gate(needed=1), add, done, requested(needed=1))
    achieved = MilestoneAchieved(
        project_id=P, milestone_id=M, achieved_at=AT, evidence="approved by lee: go"
    )
    given(*history).when(approve("lee", "go")).then([approved("lee", "go"), achieved])


def test_who_may_sign_and_how_often():
    given(*READY).when(approve("mallory")).rejects("forbidden", "not an approver")
    given(*READY).when(reject("mallory")).rejects("forbidden", "not an approver")
    given(*READY, approved("dana")).when(approve("dana")).rejects(
        "conflict", f"dana already approved milestone {M} at {AT.isoformat()}"
    )
    given(*READY).when(approve(None)).rejects("invalid", "no approver")


def test_sign_off_waits_for_the_tasks():
    given(created, gate(), add).when(approve("dana")).rejects("rejected", "unfinished tasks (t1)")
    given(created, gate(), add).when(reject("dana")).rejects("rejected", "unfinished tasks (t1)")


def test_an_ordinary_milestone_needs_no_sign_off():
    plain = MilestonePlanned(project_id=P, milestone_id=M, name="x", kind="event", due=DUE)
    given(created, plain).when(approve("dana")).rejects("rejected", "not a decision gate")


def test_a_closed_gate_takes_no_sign_off():
    achieved = MilestoneAchieved(project_id=P, milestone_id=M, achieved_at=AT, evidence="x")
    history = (*READY, approved("dana"), approved("lee"), achieved)
    given(*history).when(approve("lee")).rejects("rejected", "is achieved")
    given(*history).when(reject("lee")).rejects("rejected", "is achieved")


def test_a_rejection_clears_the_approvals_and_the_request_stands():
    rejected = MilestoneApprovalRejected(
        project_id=P, milestone_id=M, reason="load test failed", approver="lee", rejected_at=AT
    )
    given(*READY, approved("dana")).when(reject("lee")).then([rejected])
    # dana may approve again: her approval was cleared
    given(*READY, approved("dana"), rejected).when(approve("dana")).then([approved("dana")])


def test_a_reopened_task_clears_approvals_and_request_and_a_new_request_follows():
    history = (*READY, approved("dana"), reopened)
    given(*history).when(approve("lee")).rejects("rejected", "unfinished tasks")
    given(*history).when(done).then([done, requested()])


def test_a_reported_achievement_of_a_gate_needs_its_approvals():
    report = MilestoneAchieved(project_id=P, milestone_id=M, achieved_at=AT)
    given(*READY, approved("dana")).when(report).rejects("rejected", "1 of 2 approvals missing")


def test_approvers_set_makes_a_gate_changes_it_and_unmakes_it():
    plain = MilestonePlanned(project_id=P, milestone_id=M, name="x", kind="event", due=DUE)
    make = ApproversSet(project_id=P, milestone_id=M, approvers=["dana", "lee"])
    stamped = ApproversSet(project_id=P, milestone_id=M, approvers=["dana", "lee"], set_at=AT)
    given(created, plain, add).when(make).then([stamped])
    # its tasks done already: the request follows at once
    given(created, plain).when(make).then([stamped, requested()])
    given(*READY).when(make).then([])  # a repeat
    # lee is replaced by kim: dana's approval stays, the request names who is pending
    swap = ApproversSet(project_id=P, milestone_id=M, approvers=["dana", "kim"], set_at=AT)
    given(*READY, approved("dana")).when(swap).then(
        [swap, requested(pending=("kim",), approvers=("dana", "kim"))]
    )
    # one approval needed now, and dana's was given: achieved
    lower = ApproversSet(
        project_id=P, milestone_id=M, approvers=["dana", "lee"], approvals_needed=1, set_at=AT
    )
    achieved = MilestoneAchieved(
        project_id=P,
        milestone_id=M,
        achieved_at=AT,
        evidence="approved by dana: approved for launch",
    )
    given(*READY, approved("dana")).when(lower).then([lower, achieved])
    unmake = ApproversSet(project_id=P, milestone_id=M, approvers=[], set_at=AT)
    given(*READY).when(unmake).then([unmake])
    given(*READY).when(ApproversSet(project_id=P, milestone_id=M, approvers=["a", "a"])).rejects(
        "invalid", "named twice"
    )


def test_a_time_gate_is_judged_at_its_deadline_with_its_sign_off():
    history = (created, gate("time"), add, done, requested())
    deadline = DeadlineReached(project_id=P, milestone_id=M, due=DUE, reached_at=AT)
    missed = MilestoneMissed(project_id=P, milestone_id=M, due=DUE, awaiting_approval=True)
    given(*history, approved("dana")).when(deadline).then([deadline, missed])
    # complete sign-off before the date: no achievement until the deadline, then achieved
    given(*history, approved("dana")).when(approve("lee")).then([approved("lee")])
    achieved = MilestoneAchieved(
        project_id=P, milestone_id=M, achieved_at=AT, evidence=f"every task done by {DUE}"
    )
    both = (*history, approved("dana"), approved("lee"))
    given(*both).when(deadline).then([deadline, achieved])
    # after the miss the last approval achieves it (late)
    late = MilestoneAchieved(
        project_id=P,
        milestone_id=M,
        achieved_at=AT,
        evidence="approved by dana, lee: approved for launch",
    )
    given(*history, approved("dana"), deadline, missed).when(approve("lee")).then(
        [approved("lee"), late]
    )


def test_an_event_gate_missed_with_open_tasks_is_not_awaiting_approval():
    deadline = DeadlineReached(project_id=P, milestone_id=M, due=DUE, reached_at=AT)
    missed = MilestoneMissed(project_id=P, milestone_id=M, due=DUE, open_tasks=["t1"])
    given(created, gate(), add).when(deadline).then([deadline, missed])
    awaiting = MilestoneMissed(project_id=P, milestone_id=M, due=DUE, awaiting_approval=True)
    given(*READY).when(deadline).then([deadline, awaiting])


# -- the read side, pure: the status row, its presentation, the history and the notifications ----
def folded(*events) -> dict:
    import msgspec

    from events import StoredEvent, stream_subject
    from projections import status
    from projections.status import sign_off

    log = [
        (
            n,
            StoredEvent(
                id=f"e{n}",
                source="test",
                type=type(e).__name__,
                subject=stream_subject(e),
                time=AT,
                recordedtime=AT,
                correlationid="c",
                causationid="c",
                data=e,
                principal=f"cred-{getattr(e, 'approver', None) or 'ci'}",
            ),
        )
        for n, e in enumerate(events, 1)
    ]
    row = status.fold(log)[(P, M)]
    return {
        "view": sign_off.view(row),
        "reason": sign_off.reason(row),
        "row": msgspec.to_builtins(row),
    }


def test_the_status_shows_who_signed_who_is_pending_and_why_it_waits():
    shown = folded(*READY[1:], approved("dana"))
    assert shown["reason"] == "awaiting approval (1 of 2: dana)"
    view = shown["view"]
    assert (view["state"], view["approved_by"], view["pending"]) == ("awaiting", ["dana"], ["lee"])
    assert view["approvals"]["dana"]["principal"] == "cred-dana"
    rejected = MilestoneApprovalRejected(
        project_id=P, milestone_id=M, reason="load test failed", approver="lee", rejected_at=AT
    )
    shown = folded(*READY[1:], approved("dana"), rejected)
    assert shown["view"]["state"] == "rejected" and shown["view"]["approved_by"] == []
    assert shown["reason"] == (
        "awaiting approval (0 of 2); reopened: rejected by lee: load test failed"
    )
    assert folded(*READY[1:], approved("dana"), rejected, approved("lee"))["view"]["state"] == (
        "awaiting"
    )
    # tasks open again: not requested, no reason
    shown = folded(*READY[1:], approved("dana"), reopened)
    assert shown["view"]["state"] == "not_requested" and shown["reason"] is None
    # a task added too (as ``Gate.cleared``); a task completed leaves the request standing
    more = TaskAdded(project_id=P, milestone_id=M, task_id="t2", title="Rollback drill")
    shown = folded(*READY[1:], approved("dana"), more)
    assert shown["view"]["state"] == "not_requested" and shown["row"]["sign_off"]["approvals"] == {}
    assert folded(*READY[1:], approved("dana"), done)["view"]["approved_by"] == ["dana"]
    missed = MilestoneMissed(project_id=P, milestone_id=M, due=DUE, awaiting_approval=True)
    assert folded(*READY[1:], approved("dana"), missed)["reason"] == "awaited approval (1 of 2)"
    # a time gate fully signed before its date waits for it
    time_gate = (gate("time"), add, done, requested(), approved("dana"), approved("lee"))
    assert folded(*time_gate)["reason"] == (
        "approved (2 of 2: dana, lee): achieved when its date arrives"
    )
    # an ordinary milestone has no sign-off
    plain = MilestonePlanned(project_id=P, milestone_id=M, name="x", kind="event", due=DUE)
    assert folded(plain)["view"] is None and folded(plain)["reason"] is None


def test_history_and_notifications_say_who_signed_and_what_it_means():
    import msgspec

    from projections.history import sign_off_text
    from services.notify.decision import KINDS, describe

    assert sign_off_text(approved("dana"), "cred-dana") == (
        "approved by dana (credential cred-dana): approved for launch"
    )
    assert sign_off_text(reject("lee"), "cred-lee") == (
        "approval rejected by lee (credential cred-lee): load test failed"
    )
    assert {KINDS[t] for t in ("ApprovalRequested", "MilestoneApproved")} == {
        "milestone.approval_requested",
        "milestone.approved",
    }
    assert KINDS["MilestoneApprovalRejected"] == "milestone.approval_rejected"
    data = msgspec.to_builtins(requested(pending=("lee",)))
    assert describe("ApprovalRequested", data) == (
        f"{M} awaits approval: its tasks are done; 2 of dana, lee must approve (pending: lee)"
    )


def test_the_gantt_marks_a_gate_with_its_sign_off_and_the_page_shows_it():
    import xml.etree.ElementTree as ET

    from events import ProjectCreated, StoredEvent
    from services.dashboard import model, pages, svg

    events = [
        ProjectCreated(project_id=P, name="Apollo"),
        *READY[1:],
        approved("dana"),
    ]
    log = [
        (
            n,
            StoredEvent(
                id=f"e{n}",
                source="test",
                type=type(e).__name__,
                subject="s",
                time=AT,
                recordedtime=AT,
                correlationid="c",
                causationid="c",
                data=e,
                principal="cred-dana",
            ),
        )
        for n, e in enumerate(events, 1)
    ]
    view = model.project_view(P, log, today=AT.date())
    root = ET.fromstring(svg.gantt_svg(view))
    rings = root.findall(".//{http://www.w3.org/2000/svg}circle[@data-sign-off]")
    assert [(r.get("data-milestone"), r.get("data-sign-off")) for r in rings] == [(M, "awaiting")]
    title = rings[0].find("{http://www.w3.org/2000/svg}title")
    assert title is not None and "awaiting approval (1 of 2: dana)" in (title.text or "")
    assert view.rows[0].reasons[0] == "awaiting approval (1 of 2: dana)"
    # the page: the state for everyone, the form only for a signed-in approver
    page = pages.milestone_page(view, M, [], [], [])
    assert 'id="sign-off"' in page and "<form" not in page.split('id="sign-off"')[1]
    signing = pages.Signing(signer="lee", csrf="tok", query={}, form_key="k")
    page = pages.milestone_page(view, M, [], [], [], signing)
    assert 'name="csrf" value="tok"' in page and "Sign as <strong>lee</strong>" in page
    dana = pages.Signing(signer="dana", csrf="tok", query={"signed": "approve"}, form_key="k")
    assert "Your approval is recorded." in pages.milestone_page(view, M, [], [], [], dana)
