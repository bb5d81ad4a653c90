"""Planning depth against the real stack: a hand-drawn project's critical path and floats over
HTTP and NATS, a lead (negative lag), and a target date that makes the floats negative. The
numbers are worked by hand in the comments; the pure rules are in tests/test_critical_path.py,
tests/test_forecast.py and tests/test_health.py."""

from __future__ import annotations

import datetime as dt

import msgspec

from tests.conftest import cloudevent, request

D = dt.date.fromisoformat


def ce(type_: str, data: dict) -> dict:
    return cloudevent(type_, {"project_id": "apollo", **data}, time="2026-01-05T09:00:00Z")


def planned(mid: str, due: str, order: int) -> dict:
    return ce(
        "MilestonePlanned",
        {"milestone_id": mid, "name": mid.upper(), "kind": "event", "due": due, "order": order},
    )


def depends(mid: str, on: str, lag: int) -> dict:
    return ce("DependencyAdded", {"milestone_id": mid, "depends_on": on, "lag_days": lag})


# a (due 03-01) -> b (due 03-10, lag 9) -> d (due 03-12, lag 2); a -> c (due 03-05, a lead of 3
# days: lag -3) -> d (lag 0). No task anywhere, so no forecast: each milestone's early finish is
# its expected finish: a 03-01, b max(03-10, 03-01 + 9) = 03-10, c max(03-05, 03-01 - 3) = 03-05,
# d max(03-12, 03-10 + 2, 03-05 + 0) = 03-12.
#
# No target: the finish is d's due date 03-12 (d is the only last milestone).
#   late(d) = 03-12, float 0; late(b) = 03-12 - 2 = 03-10, float 0; late(c) = 03-12, float 7;
#   late(a) = min(03-10 - 9, 03-12 + 3) = 03-01, float 0. Critical: a, b, d.
# Target 03-10: late(d) = 03-10, float -2; late(b) = 03-08, float -2; late(c) = 03-10, float 5;
#   late(a) = min(03-08 - 9, 03-10 + 3) = 02-27, float -2. Critical: a, b, d, project float -2.
PLAN = [
    ce("ProjectCreated", {"name": "Apollo"}),
    planned("a", "2026-03-01", 1),
    planned("b", "2026-03-10", 2),
    planned("c", "2026-03-05", 3),
    planned("d", "2026-03-12", 4),
    depends("b", "a", 9),
    depends("c", "a", -3),
    depends("d", "b", 2),
    depends("d", "c", 0),
]


def floats(path: dict) -> dict[str, tuple[int, bool, str, str]]:
    return {
        m["milestone_id"]: (m["float_days"], m["critical"], m["late_finish"], m["drives"])
        for m in path["milestones"]
    }


async def test_critical_path_and_float_of_a_hand_drawn_project(api, nc, system):
    system.queries.today = lambda: D("2026-02-01")
    position = 0
    for c in PLAN:
        reply = await request(nc, c)
        assert reply.accepted, reply
        position = reply.events[-1].position

    body = (
        await api.get("/projects/apollo/critical-path", params={"min_position": position})
    ).json()
    path = body["data"]
    assert (path["finish"], path["target"], path["project_float_days"]) == ("2026-03-12", None, 0)
    assert path["chain"] == ["a", "b", "d"]
    assert floats(path) == {
        "a": (0, True, "2026-03-01", "d"),
        "b": (0, True, "2026-03-10", "d"),
        "c": (7, False, "2026-03-12", "d"),
        "d": (0, True, "2026-03-12", "d"),
    }
    assert [m["milestone_id"] for m in path["milestones"]] == ["a", "b", "c", "d"]

    reply = await request(
        nc, ce("ProjectTargetSet", {"target": "2026-03-10", "reason": "trade show"})
    )
    assert reply.accepted, reply
    position = reply.events[-1].position
    path = (
        await api.get("/projects/apollo/critical-path", params={"min_position": position})
    ).json()["data"]
    assert (path["finish"], path["target"], path["project_float_days"]) == (
        "2026-03-10",
        "2026-03-10",
        -2,
    )
    assert floats(path) == {
        "a": (-2, True, "2026-02-27", "d"),
        "b": (-2, True, "2026-03-08", "d"),
        "c": (5, False, "2026-03-10", "d"),
        "d": (-2, True, "2026-03-10", "d"),
    }

    # the same over NATS, and in the status and the project
    over_nats = msgspec.json.decode(
        (await nc.request("milestones.query.critical_path", b'{"project_id": "apollo"}')).data
    )
    assert over_nats["data"] == path
    status = (await api.get("/projects/apollo/milestones")).json()["data"]
    assert {m["milestone_id"]: (m["float_days"], m["critical"]) for m in status} == {
        "a": (-2, True),
        "b": (-2, True),
        "c": (5, False),
        "d": (-2, True),
    }
    assert all(m["forecast"] is None for m in status)  # no task anywhere: nothing to pace
    project = (await api.get("/projects/apollo")).json()["data"]
    assert project["target"] == "2026-03-10"

    # a repeat of the same target changes nothing; clearing it goes back to the due dates
    again = await request(nc, ce("ProjectTargetSet", {"target": "2026-03-10"}))
    assert again.accepted and again.events == []
    cleared = await request(nc, ce("ProjectTargetSet", {"target": None}))
    path = (
        await api.get(
            "/projects/apollo/critical-path",
            params={"min_position": cleared.events[-1].position},
        )
    ).json()["data"]
    assert (path["finish"], path["target"]) == ("2026-03-12", None)


async def test_the_report_shows_floats_the_chain_and_the_backtest(api, nc, system):
    system.queries.today = lambda: D("2026-02-01")
    for c in PLAN:
        assert (await request(nc, c)).accepted
    report = (await api.get("/projects/apollo/report")).json()["data"]
    assert report["critical_chain"] == ["a", "b", "d"] and report["project_float_days"] == 0
    assert {m["milestone_id"]: m["float_days"] for m in report["milestones"]} == {
        "a": 0,
        "b": 0,
        "c": 7,
        "d": 0,
    }
    assert report["backtest"] == {
        "points": [],
        "samples": 0,
        "skipped": 0,
        "mean_absolute_error_days": None,
        "bias_days": None,
    }


async def test_a_critical_path_of_an_unknown_project_is_not_found(api):
    r = await api.get("/projects/nowhere/critical-path")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_one_milestone_is_judged_as_its_project_judges_it(api, nc, system):
    """``GET /milestones/{id}`` reads the project's rows and target in one statement, judges the
    whole project and presents that milestone alone: each answer is the project list's row for
    it, byte for byte: its lateness through predecessors, its forecast (the project's pace), its
    float (against the target) and its gate."""
    system.queries.today = lambda: D("2026-02-01")
    # completions in three of the six weeks up to today: a pace (the median week is half of one)
    days = ["2025-12-23", "2025-12-30", "2026-01-05"]
    more = [
        ce(
            "MilestonePlanned",
            {
                "milestone_id": "gate",
                "name": "GATE",
                "kind": "event",
                "due": "2026-03-20",
                "order": 5,
                "approvers": ["dana", "lee"],
            },
        ),
        depends("gate", "d", 0),
        ce("TaskAdded", {"milestone_id": "gate", "task_id": "review", "title": "Review"}),
        ce(
            "TaskCompleted",
            {"milestone_id": "gate", "task_id": "review", "completed_at": f"{days[2]}T09:00:00Z"},
        ),
        *(
            ce("TaskAdded", {"milestone_id": "b", "task_id": f"t{i}", "title": f"T{i}"})
            for i in range(4)
        ),
        *(
            ce(
                "TaskCompleted",
                {"milestone_id": "b", "task_id": f"t{i}", "completed_at": f"{day}T09:00:00Z"},
            )
            for i, day in enumerate(days)
        ),
        ce("ProjectTargetSet", {"target": "2026-03-10"}),
    ]
    position = 0
    for c in PLAN + more:
        reply = await request(nc, c)
        assert reply.accepted and reply.events, reply
        position = reply.events[-1].position

    listed = await api.get("/projects/apollo/milestones", params={"min_position": position})
    rows = {m["milestone_id"]: m for m in listed.json()["data"]}
    assert list(rows) == ["a", "b", "c", "d", "gate"]
    # what the comparison covers: a forecast, a float the target made negative, a gate's reason
    assert rows["b"]["forecast"] is not None and rows["d"]["float_days"] < 0
    assert rows["gate"]["sign_off"]["state"] == "awaiting"
    assert rows["gate"]["health_reasons"][0].startswith("awaiting approval")
    for mid, row in rows.items():
        one = await api.get(f"/milestones/{mid}", params={"project_id": "apollo"})
        assert one.status_code == 200 and one.json()["data"] == row, mid
        # without project_id: the one project that has it
        assert (await api.get(f"/milestones/{mid}")).json()["data"] == row
    missing = await api.get("/milestones/zz", params={"project_id": "apollo"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
