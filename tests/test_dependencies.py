"""Dependencies end to end on real servers: a predecessor moves, the successor is violated (notify)
or shifted (shift) in the same atomic append, caused by the move; status shows why."""

from __future__ import annotations

from events import decode_stored
from events.subjects import EVENTS_STREAM
from tests.conftest import caught_up, cloudevent, request


def plan(project: str, policy: str) -> list[dict]:
    def ce(type_: str, **data: object) -> dict:
        return cloudevent(type_, {"project_id": project, **data})

    return [
        ce("ProjectCreated", name="Apollo", dependency_policy=policy),
        ce(
            "MilestonePlanned",
            milestone_id="design",
            name="Design frozen",
            kind="event",
            due="2026-12-01",
        ),
        ce(
            "MilestonePlanned",
            milestone_id="build",
            name="Build done",
            kind="technical",
            due="2026-12-10",
        ),
        ce("MilestonePlanned", milestone_id="launch", name="Launch", kind="time", due="2026-12-12"),
        ce("DependencyAdded", milestone_id="build", depends_on="design", lag_days=2),
        ce("DependencyAdded", milestone_id="launch", depends_on="build", lag_days=1),
    ]


def move(project: str, milestone: str, due: str, **ext: object) -> dict:
    return cloudevent(
        "MilestoneRescheduled",
        {
            "project_id": project,
            "milestone_id": milestone,
            "new_due": due,
            "reason": "supplier late",
        },
        **ext,
    )


async def stored_at(nc, position: int):
    return decode_stored((await nc.jetstream().get_msg(EVENTS_STREAM, position)).data)


async def test_notify_policy_reports_the_violation_and_status_shows_it(system, api, nc, db_url):
    assert (await request(nc, plan("n", "notify"))).accepted
    reply = await request(nc, move("n", "design", "2026-12-09", actor="ada"))
    assert [e.type for e in reply.events] == ["MilestoneRescheduled", "DependencyViolated"]
    moved, violated = [await stored_at(nc, e.position) for e in reply.events]
    assert violated.subject == "milestones.events.n.build" and violated.causationid == moved.id
    assert (violated.data.earliest.isoformat(), violated.data.due.isoformat()) == (
        "2026-12-11",
        "2026-12-10",
    )
    await caught_up(db_url, reply.events[-1].position)

    rows = {m["milestone_id"]: m for m in (await api.get("/projects/n/milestones")).json()["data"]}
    build, launch = rows["build"], rows["launch"]
    assert build["health"] == "late" and build["expected_finish"] == "2026-12-11"
    assert (
        "predecessor design (on_track) finishes 2026-12-09 + 2 days lag"
        in build["health_reasons"][1]
    )
    assert [b["milestone_id"] for b in build["blocked_by"]] == ["design"]
    assert build["violations"]["design"]["earliest"] == "2026-12-11"
    # launch (due Dec 12, lag 1 after build) is pushed to Dec 12 at the earliest: it fits, but
    # build is late
    assert launch["health"] == "at_risk" and launch["health_reasons"] == [
        "predecessor build is late (expected 2026-12-11)"
    ]
    late = (await api.get("/projects/n/milestones", params={"health": "late"})).json()["data"]
    assert [m["milestone_id"] for m in late] == ["build"]
    history = (await api.get("/milestones/build/history", params={"project_id": "n"})).json()[
        "data"
    ]
    assert (
        history[-1]["type"] == "DependencyViolated"
        and "design finishes 2026-12-09" in history[-1]["reason"]
    )

    # the same move again changes nothing; moving back clears the lateness (facts, judged now)
    assert (await request(nc, move("n", "design", "2026-12-09"))).events == []
    back = await request(nc, move("n", "design", "2026-12-01"))
    await caught_up(db_url, back.events[-1].position)
    build = (await api.get("/milestones/build", params={"project_id": "n"})).json()["data"]
    assert build["health"] == "on_track"


async def test_shift_policy_moves_the_chain_each_caused_by_its_predecessor(system, api, nc, db_url):
    assert (await request(nc, plan("s", "shift"))).accepted
    reply = await request(nc, move("s", "design", "2026-12-10", correlationid="steering-7"))
    assert [e.type for e in reply.events] == ["MilestoneRescheduled"] * 3
    design, build, launch = [await stored_at(nc, e.position) for e in reply.events]
    assert (build.data.old_due.isoformat(), build.data.new_due.isoformat()) == (
        "2026-12-10",
        "2026-12-12",
    )
    assert (launch.data.old_due.isoformat(), launch.data.new_due.isoformat()) == (
        "2026-12-12",
        "2026-12-13",
    )
    assert build.causationid == design.id and launch.causationid == build.id
    assert {e.correlationid for e in (design, build, launch)} == {"steering-7"}
    assert build.data.reason == "shifted by dependency: design finishes 2026-12-10 + 2 days lag"
    await caught_up(db_url, reply.events[-1].position)
    rows = {m["milestone_id"]: m for m in (await api.get("/projects/s/milestones")).json()["data"]}
    assert [(m, rows[m]["due"], rows[m]["health"]) for m in ("design", "build", "launch")] == [
        ("design", "2026-12-10", "on_track"),
        ("build", "2026-12-12", "on_track"),
        ("launch", "2026-12-13", "on_track"),
    ]
    audit = (await api.get("/audit", params={"correlation_id": "steering-7"})).json()["data"]
    assert [(a["milestone_id"], a["causation_id"]) for a in audit] == [
        ("design", audit[0]["causation_id"]),
        ("build", design.id),
        ("launch", build.id),
    ]


async def test_a_dependency_added_by_another_intake_is_seen_by_the_next_reschedule(settings, nc):
    """The committer skips reading a project's milestones for a reschedule while its cached project
    has no dependencies; a dependency another process added must still be honoured."""
    from services.app.wiring import intake as run_intake

    async with run_intake(settings) as first, run_intake(settings) as second:
        one = first.intake
        two = second.intake

        async def via(service, ce: dict):
            from events import ENCODER

            return await service.handle(ENCODER.encode(ce), "test")

        for c in plan("x", "notify")[:4]:  # project and milestones, no dependency yet
            assert (await via(one, c)).accepted
        assert (
            await via(one, move("x", "design", "2026-12-02"))
        ).accepted  # first caches: no dependencies
        assert (
            await via(two, plan("x", "notify")[4])
        ).accepted  # build depends on design (+2), elsewhere
        reply = await via(one, move("x", "design", "2026-12-09"))
        assert [e.type for e in reply.events] == ["MilestoneRescheduled", "DependencyViolated"]
