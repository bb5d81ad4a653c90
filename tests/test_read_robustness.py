"""Every event in the log can be projected and shown, also one written before the intake bounded
values (issue 13): dates at the ends of the calendar, times whose UTC instant is before year 1,
NUL in text, integers beyond PostgreSQL's ``integer``.

First the pure core, given/when/then (it saturates instead of raising ``OverflowError``), then the
whole read side against real servers: such events appended raw to the log, the projections run,
and every query route, dashboard page and NATS query answers without a 5xx.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET

from events import (
    DependencyAdded,
    DependencyViolated,
    MilestoneAchieved,
    MilestonePlanned,
    MilestoneRescheduled,
    ProjectCreated,
    StatusReported,
    StoredEvent,
    TaskAdded,
)
from projections import storable
from projections.status import fold
from services.dashboard import model, svg
from services.domain import dates, health, reporting
from services.domain.decider import decide_traced
from services.domain.milestone import Milestone, deadline
from services.domain.project import Project
from tests.conftest import TODAY, caught_up, cloudevent, http_client, request, wait_for
from tests.read_robustness_support import append_raw, raw_event, sweep

D = dt.date.fromisoformat
PLUS_14 = dt.timezone(dt.timedelta(hours=14))
MINUS_14 = dt.timezone(dt.timedelta(hours=-14))
YEAR_ZERO = dt.datetime(1, 1, 1, tzinfo=PLUS_14)  # its UTC instant is in year 0
YEAR_TEN_THOUSAND = dt.datetime(9999, 12, 31, 23, 59, tzinfo=MINUS_14)
SVG = "{http://www.w3.org/2000/svg}"


# == the pure core: given / when / then ============================================================
def stored(event, time: dt.datetime = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC)) -> StoredEvent:
    return StoredEvent(
        id=f"e-{id(event)}",
        source="test",
        type=type(event).__name__,
        subject="s",
        time=time,
        recordedtime=time,
        correlationid="c",
        causationid="c",
        data=event,
        actor="pm",
    )


def given(*events: tuple) -> list[reporting.Positioned]:
    """(event,) or (event, time) pairs, positioned in order."""
    return [(n + 1, stored(*e)) for n, e in enumerate(events)]


def planned(mid: str, due: str, order: int = 0) -> MilestonePlanned:
    return MilestonePlanned(
        project_id="p", milestone_id=mid, name=f"M {mid}", kind="event", due=D(due), order=order
    )


def depends(successor: str, predecessor: str, lag: int) -> DependencyAdded:
    return DependencyAdded(
        project_id="p", milestone_id=successor, depends_on=predecessor, lag_days=lag
    )


def test_date_arithmetic_saturates_at_the_ends_of_the_calendar():
    assert dates.add_days(dt.date.max, 10) == dt.date.max
    assert dates.add_days(dt.date.min, -365) == dt.date.min
    assert dates.add_days(D("2026-01-01"), -365) == D("2025-01-01")
    assert dates.utc_date(YEAR_ZERO) == dt.date.min
    assert dates.utc_date(YEAR_TEN_THOUSAND) == dt.date.max
    assert dates.utc_date(dt.datetime(2026, 1, 1, 23, tzinfo=MINUS_14)) == D("2026-01-02")
    assert dates.utc_date(dt.datetime(2026, 1, 1, 23)) == D("2026-01-01")  # naive: taken as UTC
    assert deadline(dt.date.max) == dates.TIME_MAX


def test_given_a_predecessor_due_9999_12_31_when_judged_then_its_successor_is_late_until_then():
    events = given(
        (planned("far", "9999-12-31"),),
        (planned("next", "2026-12-01"),),
        (depends("next", "far", 3650),),
    )
    verdicts = health.judge(fold(events).values(), TODAY)
    assert verdicts["far"].health == "on_track" and verdicts["far"].expected_finish == dt.date.max
    assert verdicts["next"].health == "late"
    assert verdicts["next"].expected_finish == dt.date.max
    assert "9999-12-31 at the earliest" in verdicts["next"].reasons[-1]


def test_given_a_lead_before_0001_01_01_when_judged_then_the_date_saturates():
    events = given((planned("first", "0001-01-01"),), (planned("then", "0001-01-05"),))
    events += [(3, stored(depends("then", "first", -365)))]
    verdicts = health.judge(fold(events).values(), dt.date.min)
    assert verdicts["then"].expected_finish == D("0001-01-05")
    assert verdicts["first"].health == "on_track"
    assert health.judge(fold(events).values(), TODAY)["then"].health == "missed"


def test_given_an_achievement_in_year_zero_utc_when_judged_then_it_is_achieved_on_day_one():
    events = given(
        (planned("m", "2026-12-01"),),
        (MilestoneAchieved(project_id="p", milestone_id="m", achieved_at=YEAR_ZERO),),
    )
    verdict = health.judge(fold(events).values(), TODAY)["m"]
    assert (verdict.health, verdict.expected_finish) == ("achieved", dt.date.min)


def test_given_a_predecessor_due_9999_12_31_when_a_dependency_with_lag_is_added_then_violated():
    far = Milestone(project_id="p", milestone_id="far", planned=True, due=dt.date.max)
    near = Milestone(project_id="p", milestone_id="near", planned=True, due=D("2026-12-01"))
    milestones = {"milestones.events.p.far": far, "milestones.events.p.near": near}
    for policy in ("notify", "shift"):
        project = Project(project_id="p", created=True, dependency_policy=policy)
        states = {"milestones.events.p": project, **milestones}
        traced = decide_traced(depends("near", "far", 10), states)
        [(added, no_cause), (then, cause)] = traced
        assert isinstance(added, DependencyAdded) and (no_cause, cause) == (None, 0)
        if policy == "notify":
            assert isinstance(then, DependencyViolated)
            assert (then.earliest, then.due) == (dt.date.max, D("2026-12-01"))
        else:
            assert isinstance(then, MilestoneRescheduled) and then.new_due == dt.date.max


def test_given_a_planned_time_in_year_zero_when_the_trend_is_drawn_then_dates_are_bounded():
    events = given(
        (ProjectCreated(project_id="p", name="P"),),
        (planned("m", "9999-12-31"), YEAR_ZERO),
        (planned("n", "0001-01-01"),),
        (StatusReported(project_id="p", health="late", note="x"), YEAR_TEN_THOUSAND),
    )
    trend = reporting.trend("p", events, today=TODAY)
    assert trend.report_dates[0] == dt.date.min
    assert len(trend.report_dates) <= reporting.MAX_CUTOFFS + 2
    assert [s.milestone_id for s in trend.series] == ["m", "n"]
    until_the_end = reporting.trend("p", events, today=TODAY, until=dt.date.max)
    assert len(until_the_end.report_dates) <= reporting.MAX_CUTOFFS + 3
    chart = ET.fromstring(svg.trend_svg(until_the_end))
    assert chart.findall(f".//{SVG}circle[@data-clamped]")  # drawn at the edges, not beyond


def test_given_dates_at_both_ends_when_the_gantt_is_drawn_then_far_marks_sit_on_its_edges():
    events = given(
        (ProjectCreated(project_id="p", name="P\x00"),),
        (planned("far", "9999-12-31", order=2**40),),
        (planned("old", "0001-01-01", order=-(2**40)),),
        (planned("now", "2026-12-01"),),
        (
            TaskAdded(
                project_id="p",
                milestone_id="now",
                task_id="t",
                title="T\x00",
                start=D("0001-01-01"),
                due=D("9999-12-31"),
            ),
        ),
    )
    view = model.project_view("p", events, today=TODAY)
    text = svg.gantt_svg(view, link="/ui/projects/p")
    root = ET.fromstring(text)  # an XML document: no NUL in it
    diamonds = {
        d.get("data-milestone"): d
        for d in root.iter(f"{SVG}path")
        if d.get("class", "").startswith("diamond")
    }
    assert diamonds["far"].get("data-date") == "9999-12-31"
    assert diamonds["far"].get("data-clamped") == "after"
    assert diamonds["old"].get("data-clamped") == "before"
    assert "now" in diamonds and diamonds["now"].get("data-clamped") is None
    right = svg.LABEL_W + svg.CHART_W
    assert all(svg.LABEL_W <= float(d.get("data-x")) <= right for d in diamonds.values())
    assert "due 9999-12-31 (off the chart" in text


def test_storable_values_keep_what_postgresql_refuses_as_something_it_holds():
    assert storable.text("a\x00b") == "a\ufffdb" and storable.text("plain") == "plain"
    assert storable.integer(2**40) == 2**31 - 1 and storable.integer(-(2**40)) == -(2**31)
    assert storable.timestamp(YEAR_ZERO) == storable.TIME_MIN
    assert storable.timestamp(YEAR_TEN_THOUSAND) == storable.TIME_MAX
    assert storable.timestamp(dt.datetime(2026, 1, 1)).tzinfo == dt.UTC
    body = b'{"a":"x\\u0000y","b":"\\\\u0000","c":"\\\\\\u0000"}'
    assert storable.json_bytes(body) == b'{"a":"x\\ufffdy","b":"\\\\u0000","c":"\\\\\\ufffd"}'


# == the read side against real servers ============================================================
LEGACY = "legacy"


def legacy_log() -> list[tuple[str, bytes]]:
    """A project as a log written before the intake bounded values may hold it."""

    def p(**kw):
        return {"project_id": LEGACY, **kw}

    def m(mid: str, **kw):
        return {"project_id": LEGACY, "milestone_id": mid, **kw}

    nul = "with a \x00 NUL"
    return [
        raw_event(
            "ProjectCreated",
            p(name=f"Legacy {nul}", goals=[nul]),
            actor=f"actor {nul}",
            source=f"source {nul}",
        ),
        raw_event(
            "MilestonePlanned",
            m("far", name=nul, kind="event", due="9999-12-31", order=2**40, phase=nul),
        ),
        raw_event(
            "MilestonePlanned",
            m("old", name="Old", kind="time", due="0001-01-01", order=-(2**40)),
        ),
        raw_event(
            "MilestonePlanned",
            m("zero", name="Planned in year zero UTC", kind="event", due="2026-12-01"),
            time="0001-01-01T00:00:00+14:00",
        ),
        raw_event(
            "MilestonePlanned",
            m("near", name="Near", kind="technical", due="2026-12-10", order=3),
            time="2026-11-20T10:00:00",  # no offset at all
        ),
        raw_event(
            "TaskAdded",
            m("far", task_id="t1", title=nul, start="0001-01-01", due="9999-12-31", check=nul),
        ),
        raw_event(
            "TaskCompleted",
            m("far", task_id="t1", completed_at="2090-01-01T00:00:00Z", result="passed"),
        ),
        raw_event("DependencyAdded", p(milestone_id="far", depends_on="old", lag_days=10)),
        raw_event("DependencyAdded", p(milestone_id="zero", depends_on="far", lag_days=3650)),
        raw_event(
            "MilestoneAchieved", m("old", achieved_at="0001-01-01T00:00:00+14:00", evidence=nul)
        ),
        raw_event(
            "MilestoneRescheduled",
            m("zero", new_due="9999-12-31", old_due="2026-12-01", reason=nul),
            actor=nul,
        ),
        raw_event(
            "DependencyViolated",
            m(
                "zero",
                depends_on="far",
                predecessor_finish="9999-12-31",
                lag_days=3650,
                due="2026-12-01",
                earliest="9999-12-31",
            ),
        ),
        raw_event("MilestoneMissed", m("old", due="0001-01-01", open_tasks=["t9"])),
        raw_event(
            "DeadlineReached",
            m("far", due="9999-12-31", reached_at="9999-12-31T23:59:59-14:00"),
        ),
        raw_event(
            "StatusReported",
            p(health="late", note=nul, milestone_id="far"),
            time="9999-12-31T23:59:59-14:00",
            actor=nul,
        ),
        raw_event("BaselineSet", p(name=nul, planned={"far": "9999-12-31", "old": "0001-01-01"})),
        raw_event(
            "StakeholderSubscribed",
            p(stakeholder=nul, url="https://hooks.example/\x00"),
        ),
        raw_event(
            "StakeholderSubscribed",
            p(stakeholder="gone", url="https://hooks.example/x", milestone_id="far"),
        ),
        raw_event(
            "StakeholderUnsubscribed",
            p(stakeholder="gone", url="https://hooks.example/x", milestone_id="far"),
        ),
        raw_event("MilestonePlanned", m("dropped", name="Dropped", kind="event", due="2026-12-20")),
        raw_event(
            "MilestoneCancelled",
            m("dropped", reason=nul),
            recordedtime="0001-01-01T00:00:00+14:00",
        ),
    ]


MILESTONES = ("far", "old", "zero", "near", "dropped")


async def test_a_legacy_log_projects_and_every_query_and_page_answers(
    system, nc, db_url, authenticator
):
    last = await append_raw(nc, legacy_log())
    # the intake decides on such a history too: a lag after 9999-12-31 saturates, not `internal`
    reply = await request(
        nc,
        cloudevent(
            "DependencyAdded",
            {"project_id": LEGACY, "milestone_id": "near", "depends_on": "far", "lag_days": 10},
        ),
    )
    assert reply.accepted, reply
    assert [e.type for e in reply.events] == ["DependencyAdded", "DependencyViolated"]
    last = max(last, reply.events[-1].position)
    await caught_up(db_url, last)

    async with http_client(system, authenticator, timeout=60) as (client, app):
        parked = (await client.get("/parked")).json()
        assert parked == [], parked  # every event was projected: nothing parked

        rows = {
            r["milestone_id"]: r
            for r in (await client.get(f"/projects/{LEGACY}/milestones")).json()["data"]
        }
        assert set(rows) == set(MILESTONES)
        far, old, near = rows["far"], rows["old"], rows["near"]
        assert far["name"] == "with a \ufffd NUL" and far["phase"] == "with a \ufffd NUL"
        assert (far["order"], old["order"]) == (2**31 - 1, -(2**31))  # clamped to integer
        assert (far["due"], old["due"]) == ("9999-12-31", "0001-01-01")  # dates kept as they are
        assert far["last_report"]["note"] == "with a \ufffd NUL"
        assert near["health"] == "late" and near["expected_finish"] == "9999-12-31"
        assert old["health"] == "achieved" and old["achieved_at"].startswith("0001-01-02")
        project = (await client.get(f"/projects/{LEGACY}")).json()["data"]
        assert project["name"] == "Legacy with a \ufffd NUL" and project["goals"] == [
            "with a \ufffd NUL"
        ]
        audit = (await client.get("/audit", params={"project_id": LEGACY})).json()["data"]
        assert audit[0]["actor"] == "actor with a \ufffd NUL"
        assert audit[0]["payload"]["name"] == "Legacy with a \ufffd NUL"
        subscriptions = (await client.get(f"/projects/{LEGACY}/subscriptions")).json()["data"]
        assert [s["stakeholder"] for s in subscriptions] == ["with a \ufffd NUL"]
        history = (await client.get("/milestones/zero/history")).json()["data"]
        assert [h["type"] for h in history] == [
            "MilestonePlanned",
            "MilestoneRescheduled",
            "DependencyViolated",
        ]
        page = await client.get(f"/ui/projects/{LEGACY}")  # folded from the log: NUL in names
        assert page.status_code == 200 and "\x00" not in page.text and "\ufffd NUL" in page.text
        gantt = await client.get(f"/ui/projects/{LEGACY}/gantt.svg")
        root = ET.fromstring(gantt.text)
        far_due = next(
            d
            for d in root.iter(f"{SVG}path")
            if d.get("data-milestone") == "far" and "diamond" in d.get("class", "")
        )
        assert (far_due.get("data-date"), far_due.get("data-clamped")) == ("9999-12-31", "after")

        result = await sweep(client, app, nc, LEGACY, MILESTONES)
        assert not result.failures, "\n".join(result.failures)
        for path in (
            "/ui",
            f"/ui/projects/{LEGACY}",
            f"/ui/projects/{LEGACY}/trend",
            f"/ui/projects/{LEGACY}/report",
            f"/ui/projects/{LEGACY}/milestones/far",
            f"/projects/{LEGACY}/report",
            f"/projects/{LEGACY}/trend",
        ):
            assert result.status(path) == 200, path
        assert len(result.calls) > 150  # the sweep reached every route and variant

    async def nothing_parked() -> bool:  # and the projections still park nothing afterwards
        async with http_client(system, authenticator, timeout=60) as (client, _):
            return (await client.get("/parked")).json() == []

    await wait_for(nothing_parked, timeout=5, what="no parked event")


async def test_given_a_query_that_fails_unexpectedly_when_asked_over_nats_then_internal():
    from dataclasses import replace

    from services.query.nats_handlers import answer
    from services.query.registry import BY_NAME

    async def broken(queries, params):
        raise OverflowError("date value out of range")

    failing = {"projections": replace(BY_NAME["projections"], handler=broken)}
    reply = json.loads(await answer(None, "projections", b"{}", by_name=failing))
    assert reply["accepted"] is False and reply["error"]["code"] == "internal"
    assert "OverflowError" in reply["error"]["message"]
