"""Evaluating success: the report (baselines, variance, slips, on-time rate, time travel) and the
milestone trend analysis. Expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from events import (
    BaselineSet,
    DependencyAdded,
    MilestoneAchieved,
    MilestoneCancelled,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    StatusReported,
    StoredEvent,
    TaskAdded,
    TaskCompleted,
)
from services.domain import health, reporting
from services.eventlog.log import EventLog
from services.query.queries import project_events
from tests.conftest import cloudevent, request

D = dt.date.fromisoformat
TODAY = D("2026-05-01")


def at(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(D(day), dt.time(hour), dt.UTC)


def stored(day: str, event) -> StoredEvent:
    return StoredEvent(
        id="x",
        source="test",
        type=type(event).__name__,
        subject="s",
        time=at(day),
        recordedtime=at(day),
        correlationid="c",
        causationid="c",
        data=event,
        actor="pm",
    )


def planned(mid: str, order: int, due: str) -> MilestonePlanned:
    return MilestonePlanned(
        project_id="p", milestone_id=mid, name=mid.upper(), kind="event", due=D(due), order=order
    )


SCRIPT = [
    ("2026-01-05", ProjectCreated(project_id="p", name="P")),
    ("2026-01-05", planned("a", 1, "2026-03-01")),
    ("2026-01-05", planned("b", 2, "2026-04-01")),
    ("2026-01-05", planned("c", 3, "2026-05-01")),
    ("2026-01-05", planned("d", 4, "2026-06-01")),
    (
        "2026-01-10",
        BaselineSet(
            project_id="p",
            name="v1",
            planned={
                "a": D("2026-03-01"),
                "b": D("2026-04-01"),
                "c": D("2026-05-01"),
                "d": D("2026-06-01"),
            },
        ),
    ),
    (
        "2026-02-02",
        MilestoneRescheduled(
            project_id="p", milestone_id="b", new_due=D("2026-04-15"), reason="vendor"
        ),
    ),
    ("2026-02-27", MilestoneAchieved(project_id="p", milestone_id="a")),
    (
        "2026-03-02",
        BaselineSet(
            project_id="p",
            name="v2",
            planned={
                "a": D("2026-03-01"),
                "b": D("2026-04-15"),
                "c": D("2026-05-01"),
                "d": D("2026-06-01"),
            },
        ),
    ),
    (
        "2026-03-09",
        MilestoneRescheduled(
            project_id="p", milestone_id="c", new_due=D("2026-05-20"), reason="scope"
        ),
    ),
    ("2026-04-20", MilestoneAchieved(project_id="p", milestone_id="b")),
    ("2026-04-21", MilestoneCancelled(project_id="p", milestone_id="d", reason="descoped")),
    ("2026-04-22", StatusReported(project_id="p", health="at_risk", note="supplier late")),
]
EVENTS = [(n + 1, stored(day, e)) for n, (day, e) in enumerate(SCRIPT)]


def lines(report: reporting.Report) -> dict[str, tuple]:
    return {
        m.milestone_id: (
            str(m.reference),
            str(m.expected_finish),
            m.slip_days,
            m.on_time,
            m.state,
            m.reschedules,
        )
        for m in report.milestones
    }


def test_report_against_the_latest_baseline():
    r = reporting.report("p", EVENTS, today=TODAY)
    assert r.baseline == "v2" and r.baselines == ["v1", "v2"] and r.position == 13
    assert lines(r) == {
        "a": ("2026-03-01", "2026-02-27", -2, True, "achieved", 0),  # two days early
        "b": ("2026-04-15", "2026-04-20", 5, False, "achieved", 1),  # v2 took the reschedule in
        "c": ("2026-05-01", "2026-05-20", 19, None, "open", 1),  # due later than today
        "d": ("2026-06-01", "2026-06-01", 0, None, "cancelled", 0),  # out of every aggregate
    }
    assert (r.planned, r.achieved, r.on_time, r.on_time_rate) == (3, 2, 1, 0.5)
    assert (r.mean_slip_days, r.worst_slip_days) == (7.33, 19)  # (-2 + 5 + 19) / 3
    assert (str(r.reference_finish), str(r.expected_finish), r.schedule_variance_days) == (
        "2026-05-01",
        "2026-05-20",
        19,
    )
    assert [(n.health, n.note, n.actor) for n in r.status_reports] == [
        ("at_risk", "supplier late", "pm")
    ]


def test_report_against_an_older_baseline():
    r = reporting.report("p", EVENTS, today=TODAY, baseline="v1")
    assert lines(r)["b"][:3] == ("2026-04-01", "2026-04-20", 19)  # against v1, b is 19 days late
    assert (r.mean_slip_days, r.worst_slip_days, r.schedule_variance_days) == (
        12.0,
        19,
        19,
    )  # (-2 + 19 + 19) / 3
    with pytest.raises(KeyError):
        reporting.report("p", EVENTS, today=TODAY, baseline="v9")


def test_as_of_is_the_report_of_the_truncated_stream():
    then = reporting.report("p", EVENTS, today=TODAY, as_of=D("2026-03-05"))
    assert then.as_of == D("2026-03-05") and then.position == 9
    assert lines(then) == {
        "a": ("2026-03-01", "2026-02-27", -2, True, "achieved", 0),
        "b": ("2026-04-15", "2026-04-15", 0, None, "open", 1),
        "c": ("2026-05-01", "2026-05-01", 0, None, "open", 0),
        "d": ("2026-06-01", "2026-06-01", 0, None, "open", 0),
    }
    assert (
        then.planned,
        then.achieved,
        then.on_time_rate,
        then.mean_slip_days,
        then.schedule_variance_days,
    ) == (4, 1, 1.0, -0.5, 0)
    truncated = reporting.report("p", EVENTS[:9], today=D("2026-03-05"))
    assert msgspec.structs.replace(then, as_of=None) == truncated
    by_position = reporting.report("p", EVENTS, today=D("2026-03-05"), position=9)
    assert by_position == truncated
    # judged as of that day: c was not overdue on 2026-05-15 although today it would be
    assert (
        lines(reporting.report("p", EVENTS, today=D("2026-06-01"), as_of=D("2026-05-15")))["c"][4]
        == "open"
    )
    assert lines(reporting.report("p", EVENTS, today=D("2026-06-01")))["c"][4] == "overdue"


# one expected finish: a milestone held up by an open task and by a predecessor with a lag
ONE_DEFINITION = [
    ("2026-01-05", planned("x", 1, "2026-03-01")),
    ("2026-01-05", planned("y", 2, "2026-03-10")),
    ("2026-01-05", TaskAdded(project_id="p", milestone_id="x", task_id="t1", title="T1")),
    (
        "2026-01-05",
        TaskAdded(project_id="p", milestone_id="x", task_id="t2", title="T2", due=D("2026-03-04")),
    ),
    ("2026-01-05", DependencyAdded(project_id="p", milestone_id="y", depends_on="x", lag_days=7)),
    ("2026-02-02", TaskCompleted(project_id="p", milestone_id="x", task_id="t1")),
]


def test_the_report_and_the_trend_use_the_status_expected_finish():
    events = [(n + 1, stored(day, e)) for n, (day, e) in enumerate(ONE_DEFINITION)]
    today = D("2026-02-16")
    r = reporting.report("p", events, today=today)
    by_id = {m.milestone_id: m for m in r.milestones}
    # x: due 03-01, but its open task t2 is due 03-04 -> expected 03-04, late, slip 3
    # y: due 03-10, x finishes 03-04 + 7 days lag = 03-11 -> expected 03-11, late, slip 1
    assert (str(by_id["x"].expected_finish), by_id["x"].health, by_id["x"].slip_days) == (
        "2026-03-04",
        "late",
        3,
    )
    assert (str(by_id["y"].expected_finish), by_id["y"].health, by_id["y"].slip_days) == (
        "2026-03-11",
        "late",
        1,
    )
    assert (str(r.expected_finish), r.schedule_variance_days) == ("2026-03-11", 1)
    # the very verdicts health gives the status rows of the same facts
    folded = reporting.fold(events).milestones.values()
    assert {k: v.expected_finish for k, v in health.judge(folded, today).items()} == {
        "x": D("2026-03-04"),
        "y": D("2026-03-11"),
    }
    # the trend's last point (today) is that date
    t = reporting.trend("p", events, today=today)
    last = {s.milestone_id: s.points[-1] for s in t.series}
    assert {k: (str(p.report_date), str(p.expected_finish)) for k, p in last.items()} == {
        "x": ("2026-02-16", "2026-03-04"),
        "y": ("2026-02-16", "2026-03-11"),
    }


def test_trend_gives_each_milestone_its_expected_finish_at_every_report_date():
    t = reporting.trend("p", EVENTS, today=TODAY, until=D("2026-04-22"))
    mondays = [
        D("2026-01-05") + dt.timedelta(weeks=w) for w in range(16)
    ]  # 2026-01-05 .. 2026-04-20
    assert t.report_dates == [
        *mondays,
        D("2026-04-22"),
    ]  # reschedule days 02-02 and 03-09 are Mondays
    series = {
        s.milestone_id: {str(p.report_date): str(p.expected_finish) for p in s.points}
        for s in t.series
    }
    assert [s.milestone_id for s in t.series] == ["a", "b", "c", "d"]
    assert (
        series["b"]["2026-01-26"] == "2026-04-01" and series["b"]["2026-02-02"] == "2026-04-15"
    )  # slipped
    assert (
        series["b"]["2026-04-20"] == "2026-04-20" and series["b"]["2026-04-22"] == "2026-04-20"
    )  # reached
    assert series["a"]["2026-03-02"] == "2026-02-27"
    assert series["c"]["2026-03-02"] == "2026-05-01" and series["c"]["2026-03-09"] == "2026-05-20"
    assert (
        "2026-04-22" not in series["d"] and series["d"]["2026-04-20"] == "2026-06-01"
    )  # cancelled on 04-21


# -- over the query API, from the real event log ---------------------------------------------
def ce(day: str, type_: str, data: dict) -> dict:
    return cloudevent(type_, {"project_id": "moon", **data}, time=f"{day}T09:00:00Z", actor="pm")


async def test_report_and_trend_over_http_and_nats(api, nc, system):
    system.queries.today = lambda: D("2026-05-01")  # the clock is an input
    script = [
        ce("2026-01-05", "ProjectCreated", {"name": "Moon"}),
        ce(
            "2026-01-05",
            "MilestonePlanned",
            {"milestone_id": "m1", "name": "M1", "kind": "event", "due": "2026-03-01", "order": 1},
        ),
        ce(
            "2026-01-05",
            "MilestonePlanned",
            {"milestone_id": "m2", "name": "M2", "kind": "event", "due": "2026-04-01", "order": 2},
        ),
        ce("2026-01-10", "BaselineSet", {"name": "v1"}),
        ce(
            "2026-02-02",
            "MilestoneRescheduled",
            {"milestone_id": "m2", "new_due": "2026-04-20", "reason": "vendor"},
        ),
        ce("2026-02-27", "MilestoneAchieved", {"milestone_id": "m1"}),
        ce("2026-04-22", "MilestoneAchieved", {"milestone_id": "m2"}),
    ]
    positions = []
    for c in script:
        reply = await request(nc, c)
        assert reply.accepted, reply
        positions.append(reply.events[-1].position)

    body = (await api.get("/projects/moon/report")).json()
    r = body["data"]
    assert body["position"] == positions[-1] and r["baseline"] == "v1"
    assert [
        (m["milestone_id"], m["reference"], m["achieved_on"], m["slip_days"], m["on_time"])
        for m in r["milestones"]
    ] == [
        ("m1", "2026-03-01", "2026-02-27", -2, True),
        ("m2", "2026-04-01", "2026-04-22", 21, False),
    ]
    assert (r["on_time_rate"], r["worst_slip_days"], r["schedule_variance_days"]) == (0.5, 21, 21)

    # time travel equals the report of the stream truncated at that point
    events = await project_events(EventLog(nc), "moon")
    cut_at = positions[4]
    by_position = (await api.get("/projects/moon/report", params={"position": cut_at})).json()[
        "data"
    ]
    expected = reporting.report(
        "moon", [e for e in events if e[0] <= cut_at], today=D("2026-05-01")
    )
    assert by_position == msgspec.to_builtins(expected)
    by_day = (await api.get("/projects/moon/report", params={"as_of": "2026-02-10"})).json()["data"]
    assert by_day["position"] == cut_at and by_day["achieved"] == 0

    compared = (
        await api.get("/projects/moon/report", params={"compare_as_of": "2026-02-10"})
    ).json()["data"]
    assert {
        c["milestone_id"]: (c["then_expected_finish"], c["now_expected_finish"], c["moved_days"])
        for c in compared["changes"]
    } == {"m1": ("2026-03-01", "2026-02-27", -2), "m2": ("2026-04-20", "2026-04-22", 2)}

    trend = (await api.get("/projects/moon/trend", params={"until": "2026-04-22"})).json()["data"]
    m2 = next(s for s in trend["series"] if s["milestone_id"] == "m2")
    assert m2["points"][0] == ["2026-01-05", "2026-04-01", None] and m2["points"][-1] == [
        "2026-04-22",
        "2026-04-22",
        None,
    ]  # the last report date is ``until``: the line ends where the status stands (m2 has no
    # task, so no forecast from the pace of work: the third element is null)

    over_nats = msgspec.json.decode(
        (await nc.request("milestones.query.report", b'{"project_id": "moon"}')).data
    )
    assert over_nats["data"] == r

    missing = await api.get("/projects/nowhere/report")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for params in ({"as_of": "yesterday"}, {"position": "-3"}):
        bad = await api.get("/projects/moon/report", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid", params
    assert (await api.get("/projects/moon/report", params={"baseline": "v7"})).status_code == 404
    bad_id = msgspec.json.decode(
        (await nc.request("milestones.query.trend", b'{"project_id": "moon.*"}')).data
    )
    assert bad_id["error"]["code"] == "invalid" and "project_id" in bad_id["error"]["message"]


def test_the_report_backtests_the_forecast_against_what_happened() -> None:
    """Hand-worked. One task is completed every day from 2025-11-20 to 2026-01-28, so every week
    of any six-week pace window holds 7: the pace is 1 task a day, and a forecast is the day it
    was made plus the open tasks ahead. ``m`` is planned on 2026-01-01, due 01-29 (28 days), with
    10 tasks completed on 01-10, 12, 14, ..., 28 (the other days complete ``prep``'s, due after
    ``m``, so nothing is ahead of ``m`` in the queue); it is achieved on 01-28.

    Its checkpoints are 25/50/75 % of 28 days after 01-01: 01-08, 01-15, 01-22. Open tasks then:
    10, 7 (01-10, 12, 14 done) and 3, so the forecasts were 01-18, 01-22 and 01-25: errors
    -10, -6 and -3 days. Mean absolute error (10 + 6 + 3) / 3 = 6.33; bias -6.33 (early)."""
    m_days = [D("2026-01-10") + dt.timedelta(days=2 * i) for i in range(10)]
    script: list[tuple[str, object]] = [
        ("2025-11-01", ProjectCreated(project_id="p", name="P")),
        ("2025-11-01", planned("prep", 2, "2026-03-01")),
        *[
            (
                "2025-11-01",
                TaskAdded(project_id="p", milestone_id="prep", task_id=f"p{i}", title="p"),
            )
            for i in range(80)
        ],
        ("2026-01-01", planned("m", 1, "2026-01-29")),
        *[
            ("2026-01-01", TaskAdded(project_id="p", milestone_id="m", task_id=f"t{i}", title="t"))
            for i in range(10)
        ],
    ]
    prep_task = 0
    day = D("2025-11-20")
    while day <= D("2026-01-28"):
        if day in m_days:
            task = ("m", f"t{m_days.index(day)}")
        else:
            task, prep_task = ("prep", f"p{prep_task}"), prep_task + 1
        script.append(
            (day.isoformat(), TaskCompleted(project_id="p", milestone_id=task[0], task_id=task[1]))
        )
        day += dt.timedelta(days=1)
    script.append(("2026-01-28", MilestoneAchieved(project_id="p", milestone_id="m")))
    events = [(n, stored(d, e)) for n, (d, e) in enumerate(script, 1)]

    backtest = reporting.report("p", events, today=D("2026-02-01")).backtest
    assert [(pt.on, pt.forecast, pt.error_days) for pt in backtest.points] == [
        (D("2026-01-08"), D("2026-01-18"), -10),
        (D("2026-01-15"), D("2026-01-22"), -6),
        (D("2026-01-22"), D("2026-01-25"), -3),
    ]
    assert (backtest.samples, backtest.skipped) == (3, 0)
    assert (backtest.mean_absolute_error_days, backtest.bias_days) == (6.33, -6.33)
