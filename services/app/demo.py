"""A realistic sample project for ``milestones dev --demo``: phases, every milestone kind, tasks
with dates, dependencies under the ``shift`` policy, a baseline, reschedules, status reports,
achieved and missed milestones. Dates are relative to today, so the Gantt's today line falls in
the middle of the project; CloudEvent ids are fixed, so loading it twice appends nothing new.

The story is told as it happened: every CloudEvent is dated when its fact occurred, and the
deadlines that passed during the story are in it too (``DeadlineReached`` at midnight after the
due date, as the scheduler would have sent it then). So the quarter close is judged on its
date, design misses its date and is moved two days later, and the API contract misses its
date by a failed check; every other past milestone is achieved by its date. The scheduler sees
the demo's plan only when it is loaded, after every deadline in it has passed; it fires those
late (``services.intake.deadlines``), when the story is told and they change nothing.

A decision gate, the Go/No-Go decision, waits for the sign-off of dana and lee (two reader
credentials `milestones dev` issues by those names): its tasks are done and dana has approved,
so it is "awaiting approval (1 of 2: dana)". Her approval goes through the intake as her
principal (``load``'s ``approvers``), the way the approvals route sends it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from events import CLOUDEVENT_DECODER, ENCODER, Reply
from services.auth.principal import Principal
from services.intake.parse import APPROVALS_SOURCE
from services.intake.round import receipt_subject
from services.intake.service import IntakeService

log = structlog.get_logger("milestones.demo")

PROJECT = "atlas"
SOURCE = "milestones-demo"
GATE = "go-no-go"
APPROVERS = ("dana", "lee")  # the names of the credentials `milestones dev` issues for the gate
# the sign-offs of the story: CloudEvent id -> who signs it (sent as that principal)
SIGNED_BY = {"demo-gate-approval-dana": "dana"}

Task = tuple[str, str, int, int, str | None]  # id, title, start, due, check (days from t0)


def cloudevent(
    id_: str, time: dt.datetime, type_: str, actor: str, data: dict, source: str = SOURCE
) -> bytes:
    """One of the demo's CloudEvents: of the demo project, dated ``time`` (dates in ``data`` as
    ISO 8601)."""
    dated = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in data.items()}
    return ENCODER.encode(
        {
            "specversion": "1.0",
            "id": id_,
            "source": source,
            "type": type_,
            "time": time.isoformat().replace("+00:00", "Z"),
            "actor": actor,
            "data": {"project_id": PROJECT, **dated},
        }
    )


def demo_events(today: dt.date) -> list[bytes]:
    """The project's life as CloudEvents, in the order other systems would have sent them."""
    t0 = today - dt.timedelta(days=63)
    out: list[bytes] = []

    def day(n: int) -> dt.date:
        return t0 + dt.timedelta(days=n)

    def event(id_: str, time: dt.datetime, type_: str, actor: str, data: dict) -> None:
        out.append(cloudevent(id_, time, type_, actor, data))

    numbered = 0  # the facts people and tools report, numbered in the order they are sent

    def send(at: int, type_: str, actor: str = "maria.pm", **data: object) -> None:
        """A fact of day ``at``, in office hours, a minute after the one sent before it."""
        nonlocal numbered
        time = dt.datetime.combine(day(at), dt.time(9, 0), dt.UTC) + dt.timedelta(minutes=numbered)
        event(f"demo-{numbered:04d}", time, type_, actor, data)
        numbered += 1

    send(
        0,
        "ProjectCreated",
        name="Atlas 2.0 release",
        dependency_policy="shift",
        goals=[
            "Ship Atlas 2.0 to every customer before the spring fair",
            "Cut onboarding time in half",
            "Keep the release free of P1 defects",
        ],
    )
    # id, name, kind, phase, due (days from t0), success criteria,
    # tasks (id, title, start, due, check)
    plan: list[tuple[str, str, str, str, int, str | None, list[Task]]] = [
        (
            "kickoff",
            "Kick-off and scope signed",
            "event",
            "Discovery",
            7,
            "Scope document signed by the sponsor",
            [
                ("scope", "Write the scope document", 0, 5, None),
                ("sign", "Sponsor signs the scope", 5, 7, None),
            ],
        ),
        (
            "research",
            "User research complete",
            "event",
            "Discovery",
            24,
            None,
            [
                ("interviews", "Interview 12 customers", 3, 17, None),
                ("synthesis", "Synthesise findings", 17, 24, None),
            ],
        ),
        (
            "q-close",
            "Quarter close review",
            "time",
            "Discovery",
            35,
            "Budget and scope reviewed at quarter end",
            [("budget", "Budget review", 28, 35, None)],
        ),
        (
            "design",
            "Design frozen",
            "event",
            "Design",
            42,
            "Every screen approved by product and UX",
            [
                ("wireframes", "Wireframes", 21, 32, None),
                ("ux-review", "UX review", 32, 38, None),
                ("handoff", "Design hand-off", 38, 42, None),
            ],
        ),
        (
            "api",
            "API contract stable",
            "technical",
            "Design",
            49,
            "Contract tests green in CI",
            [
                ("schema", "Publish the API schema", 30, 44, None),
                ("contract", "Contract test suite", 40, 49, "contract-tests pass in CI"),
            ],
        ),
        (
            "build",
            "Feature complete",
            "technical",
            "Build",
            84,
            "All features merged, test suite green",
            [
                ("onboarding", "New onboarding flow", 40, 58, None),
                ("billing", "Billing changes", 45, 80, None),
                ("docs", "User documentation", 50, 84, None),
                ("suite", "Regression suite", 60, 84, "regression suite passes"),
            ],
        ),
        (
            "beta",
            "Beta with 20 customers",
            "event",
            "Build",
            98,
            "20 customers active for 2 weeks",
            [
                ("recruit", "Recruit beta customers", 70, 100, None),
                ("feedback", "Collect beta feedback", 90, 98, None),
            ],
        ),
        (
            "security",
            "Security sign-off",
            "technical",
            "Launch",
            105,
            "Penetration test without open criticals",
            [("pentest", "Penetration test", 92, 102, "no open critical findings")],
        ),
        (
            "contract",
            "Launch partner contract signed",
            "event",
            "Launch",
            112,
            None,
            [("legal", "Legal review", 80, 105, None)],
        ),
        (
            "launch",
            "General availability",
            "time",
            "Launch",
            126,
            "Released to every customer by the fair",
            [
                ("release", "Release to all customers", 118, 126, None),
                ("comms", "Launch communication", 112, 126, None),
            ],
        ),
    ]
    for order, (mid, name, kind, phase, due, criteria, _) in enumerate(plan):
        send(
            0,
            "MilestonePlanned",
            milestone_id=mid,
            name=name,
            kind=kind,
            phase=phase,
            order=order,
            due=day(due),
            **({"success_criteria": criteria} if criteria else {}),
        )
    for mid, *_rest, tasks in plan:
        for tid, title, start, due, check in tasks:
            send(
                0,
                "TaskAdded",
                milestone_id=mid,
                task_id=tid,
                title=title,
                start=day(start),
                due=day(due),
                **({"check": check} if check else {}),
            )
    for succ, pred, lag in [
        ("research", "kickoff", 0),
        ("design", "research", 3),
        ("api", "design", 0),
        ("build", "api", 7),
        ("beta", "build", 3),
        ("security", "build", 7),
        ("launch", "beta", 7),
        ("launch", "security", 3),
        ("launch", "contract", 0),
    ]:
        send(0, "DependencyAdded", milestone_id=succ, depends_on=pred, lag_days=lag)
    send(1, "BaselineSet", name="approved plan")

    def done(at: int, mid: str, tid: str, actor: str = "jira", **kw: object) -> None:
        send(at, "TaskCompleted", actor=actor, milestone_id=mid, task_id=tid, **kw)

    def deadline_passes(mid: str, due: int) -> None:
        """Midnight after the due date: the clock's message, as the scheduler sends it (ids of
        their own, so the numbered facts keep the ids an earlier version of the demo gave)."""
        midnight = dt.datetime.combine(day(due + 1), dt.time(0), dt.UTC)
        data = {"milestone_id": mid, "due": day(due)}
        event(f"demo-deadline-{mid}-{due}", midnight, "DeadlineReached", "clock", data)

    done(4, "kickoff", "scope")
    done(7, "kickoff", "sign", actor="sponsor")  # -> kickoff achieved on time
    send(
        7,
        "StatusReported",
        actor="maria.pm",
        health="on_track",
        note="Kick-off done, scope signed.",
    )
    send(14, "StatusReported", health="on_track", note="Interviews under way (5 of 12).")
    send(
        18,
        "MilestoneRescheduled",
        milestone_id="research",
        new_due=day(41),
        reason="Three interviews moved by customers",
    )  # shifts design, api, build, beta, ... downstream
    send(
        21, "StatusReported", health="at_risk", note="Research slipped a week; downstream shifted."
    )
    done(16, "research", "interviews")
    done(29, "research", "synthesis")  # -> research achieved (before its new date)
    done(33, "q-close", "budget", actor="finance")
    deadline_passes("q-close", 35)  # -> a time milestone, achieved on its date
    send(35, "StatusReported", health="on_track", note="Quarter close: budget on plan.")
    done(36, "design", "wireframes", actor="figma")
    done(44, "design", "ux-review", actor="figma")
    # due on day 44 since research moved (41, plus 3 days' lag): missed, hand-off open
    deadline_passes("design", 44)
    send(
        46,
        "MilestoneRescheduled",
        milestone_id="design",
        new_due=day(55),
        reason="UX review found accessibility gaps in checkout",
    )
    send(49, "StatusReported", health="at_risk", note="Design frozen later; build compressed.")
    done(50, "api", "schema", actor="github")
    done(52, "api", "contract", actor="ci", result="failed")
    # due on day 55 since design moved: missed, the contract check still failing
    deadline_passes("api", 55)
    done(56, "api", "contract", actor="ci", result="passed")
    done(54, "design", "handoff", actor="figma")
    send(56, "StatusReported", health="on_track", note="Design frozen. API contract green.")
    done(58, "build", "onboarding", actor="github")
    send(
        60,
        "MilestoneRescheduled",
        milestone_id="contract",
        new_due=day(128),
        reason="Partner's legal team asked for two more weeks",
    )
    send(
        62, "StatusReported", health="at_risk", note="Billing behind plan; partner contract later."
    )
    out += gate_events(day)
    out += scope_events(day)
    return out


def scope_events(day: Callable[[int], dt.date]) -> list[bytes]:
    """Build's scope grows on day 62 (ids of their own: the facts numbered before keep theirs):
    two more tasks, due with the rest. At the project's pace (about 1.5 tasks a week) its five
    open tasks need more than three weeks, so the forecast falls after the due date while the
    plan (the expected finish) still says it fits: the two figures disagree, and the forecast
    puts build at risk."""
    return [
        cloudevent(
            f"demo-scope-{tid}",
            dt.datetime.combine(day(62), dt.time(15, n), dt.UTC),
            "TaskAdded",
            "maria.pm",
            {
                "milestone_id": "build",
                "task_id": tid,
                "title": title,
                "start": day(62),
                "due": day(84),
            },
        )
        for n, (tid, title) in enumerate([("i18n", "Translations"), ("perf", "Performance pass")])
    ]


def gate_events(day: Callable[[int], dt.date]) -> list[bytes]:
    """The Go/No-Go gate (ids of their own: the facts numbered before keep theirs)."""
    out: list[bytes] = []

    def event(n: int, at: int, hour: int, type_: str, actor: str, data: dict) -> None:
        time = dt.datetime.combine(day(at), dt.time(hour, 0), dt.UTC)
        out.append(
            cloudevent(f"demo-gate-{n:02d}", time, type_, actor, {"milestone_id": GATE, **data})
        )

    event(
        1,
        0,
        12,
        "MilestonePlanned",
        "maria.pm",
        {
            "name": "Go/No-Go decision",
            "kind": "event",
            "phase": "Launch",
            "order": 10,
            "due": day(70),
            "success_criteria": "Signed off by product (dana) and engineering (lee)",
        },
    )
    for n, (tid, title, start, due) in enumerate(
        [("risks", "Risk register reviewed", 50, 60), ("readiness", "Readiness review", 56, 62)],
        2,
    ):
        event(
            n,
            0,
            12,
            "TaskAdded",
            "maria.pm",
            {"task_id": tid, "title": title, "start": day(start), "due": day(due)},
        )
    event(
        4, 1, 12, "ApproversSet", "maria.pm", {"approvers": list(APPROVERS), "approvals_needed": 2}
    )
    event(5, 60, 11, "TaskCompleted", "jira", {"task_id": "risks"})
    event(6, 62, 11, "TaskCompleted", "jira", {"task_id": "readiness"})  # -> ApprovalRequested
    approval = {
        "milestone_id": GATE,
        "meaning": "approved for launch",
        "reason": "Readiness review passed; remaining risks accepted",
    }
    time = dt.datetime.combine(day(62), dt.time(16, 0), dt.UTC)
    out.append(
        cloudevent(
            "demo-gate-approval-dana",
            time,
            "MilestoneApproved",
            "dana",
            approval,
            source=APPROVALS_SOURCE,
        )
    )
    return out


@dataclass(frozen=True, slots=True)
class Loaded:
    sent: int  # handed to the intake now
    already: int  # appended by an earlier load (its receipt exists): not sent again
    refused: int


def signer(name: str, approvers: Mapping[str, Principal]) -> Principal:
    """Who signs a sign-off of the story: the credential of that name `milestones dev` issued,
    else (tests, a database without dev.json) a stand-in of the services with that name."""
    return approvers.get(name) or Principal(
        id=f"system:demo-{name}", role="reader", via="system", name=name
    )


async def submit(
    intake: IntakeService, body: bytes, approvers: Mapping[str, Principal] | None = None
) -> Reply:
    """One CloudEvent of the story through the intake: as the services, or a sign-off as its
    approver's own principal (the way the approvals route sends it)."""
    name = SIGNED_BY.get(CLOUDEVENT_DECODER.decode(body).id)
    if name is None:
        return await intake.handle(body, "demo")
    principal = signer(name, approvers or {})
    return await intake.handle(body, "demo", principal=principal, sign_off=True)


async def load(
    intake: IntakeService, today: dt.date, approvers: Mapping[str, Principal] | None = None
) -> Loaded:
    """The demo through the intake like any message, in its order, each CloudEvent once.

    What an earlier load appended is known by its receipt (keyed by source and id) and not sent
    again: a restart appends nothing and asks the intake nothing, and a load cut short earlier
    is completed. (Sent again, a repeat would be answered from its receipt too, after a failed
    optimistic append: see ``services.intake.committer``.)"""
    bodies = demo_events(today)
    receipts = [receipt_subject(CLOUDEVENT_DECODER.decode(body)) for body in bodies]
    known = await intake.committer.log.last_of(receipts)
    sent = refused = 0
    for body, receipt in zip(bodies, receipts, strict=True):
        if receipt in known:
            continue
        reply = await submit(intake, body, approvers)
        sent += 1
        if reply.error is not None:
            refused += 1
            log.warning("demo event refused", code=reply.error.code, reason=reply.error.message)
    return Loaded(sent=sent, already=len(bodies) - sent, refused=refused)
