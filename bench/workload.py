"""A realistic workload: projects with phases of milestones of every kind, tasks, completions and
reschedules, as the CloudEvents a task tracker, CI and planning tools would send."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

from events import DATA_DECODERS, ENCODER, StoredEvent, project_subject, stream_subject
from services import domain

KINDS = ("event", "technical", "time")
BASE = dt.date(2027, 1, 4)
TIME = "2026-11-24T10:00:00Z"


def cloudevent(type_: str, data: dict, source: str = "bench") -> bytes:
    return ENCODER.encode(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": source,
            "type": type_,
            "time": TIME,
            "data": data,
        }
    )


def project_facts(
    project: str, milestones: int = 10, tasks: int = 10
) -> Iterator[tuple[str, dict]]:
    """(type, data) in the order a project's life would send them: 181 messages for 10x10. The
    first 30 % of milestones complete every task (event and technical ones are then achieved
    automatically), the others half of them; the second half is rescheduled once."""
    yield "ProjectCreated", {"project_id": project, "name": f"Project {project}"}
    for m in range(milestones):
        yield (
            "MilestonePlanned",
            {
                "project_id": project,
                "milestone_id": f"m{m}",
                "name": f"Milestone {m}",
                "kind": KINDS[m % 3],
                "due": (BASE + dt.timedelta(days=14 * (m + 1))).isoformat(),
                "phase": f"phase{m // 4}",
                "order": m,
            },
        )
    for m in range(milestones):
        for t in range(tasks):
            yield (
                "TaskAdded",
                {
                    "project_id": project,
                    "milestone_id": f"m{m}",
                    "task_id": f"t{t}",
                    "title": f"Task {t} of m{m}",
                },
            )
    for m in range(milestones):
        for t in range(tasks if m < milestones * 3 // 10 else tasks // 2):
            yield (
                "TaskCompleted",
                {"project_id": project, "milestone_id": f"m{m}", "task_id": f"t{t}"},
            )
    for m in range(milestones // 2, milestones):
        yield (
            "MilestoneRescheduled",
            {
                "project_id": project,
                "milestone_id": f"m{m}",
                "reason": "supplier delay",
                "new_due": (BASE + dt.timedelta(days=14 * (m + 1) + 7)).isoformat(),
            },
        )


def project_messages(
    project: str, milestones: int = 10, tasks: int = 10
) -> Iterator[tuple[str, bytes]]:
    for type_, data in project_facts(project, milestones, tasks):
        yield type_, cloudevent(type_, data)


def reschedule(project: str, milestone: str, n: int) -> bytes:
    """The n-th reschedule of an open milestone (the freshness load): a new date every time."""
    return cloudevent(
        "MilestoneRescheduled",
        {
            "project_id": project,
            "milestone_id": milestone,
            "new_due": (BASE + dt.timedelta(days=400 + n % 3000)).isoformat(),
            "reason": f"re-plan {n}",
        },
    )


def synthetic_history(
    project: str, milestones: int = 10, tasks: int = 10
) -> Iterator[tuple[str, bytes]]:
    """(subject, stored event bytes) for a project, decided by the pure core (``decide``/``evolve``)
    without the intake: what fills a stream quickly for the rebuild scenario."""
    states: dict[str, domain.State] = {}
    at = dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC)
    for n, (type_, data) in enumerate(project_facts(project, milestones, tasks)):
        fact = domain.stamp(DATA_DECODERS[type_].decode(ENCODER.encode(data)), at)
        plan = domain.plan(fact)
        needed = [plan.target, *plan.reads]
        if whole := plan.all_milestones_of or plan.milestones_if_dependent:
            prefix = f"{project_subject(whole)}."
            needed += [s for s in states if s.startswith(prefix) and s.count(".") == 3]
        view = {s: states.get(s) or domain.initial_state(s) for s in needed}
        for i, (event, _cause) in enumerate(domain.decide_traced(fact, view)):
            subject = stream_subject(event)
            states[subject] = domain.evolve(
                states.get(subject) or domain.initial_state(subject), event
            )
            cause = f"{project}-{n}"
            yield (
                subject,
                ENCODER.encode(
                    StoredEvent(
                        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{cause}/{i}")),
                        source="bench",
                        type=type(event).__name__,
                        subject=subject,
                        time=at,
                        recordedtime=at,
                        correlationid=cause,
                        causationid=cause,
                        data=event,
                    )
                ),
            )
