"""MS Project XML (MSPDI) import, pure: the parser and the mapping over the hand-written
fixture tests/data/plans/apollo.xml (numbers worked by hand in the comments), bad files, and
the contract change of BaselineSet (a plan's own baseline dates)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

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
    TaskAdded,
)
from events.common import Event
from events.envelope import StoredEvent
from events.errors import Rejected
from services.domain import milestone as milestone_decider
from services.domain import project as project_decider
from services.plans import current, mspdi
from services.plans.mapping import Current, Imported, calendar_days, event_id, import_plan
from services.plans.mspdi import PlanError

FIXTURE = Path(__file__).parent / "data" / "plans" / "apollo.xml"
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
P = "apollo"
D = dt.date


def fixture(**replace: str) -> bytes:
    text = FIXTURE.read_text()
    for old, new in replace.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text.encode()


def imported(data: bytes | None = None, now_state: Current | None = None, **kw) -> Imported:
    plan = mspdi.parse(data or FIXTURE.read_bytes())
    return import_plan(plan, P, now_state or Current(), NOW, **kw)


def of(result: Imported, kind: type[Event]) -> list:
    return [o.event for o in result.events if isinstance(o.event, kind)]


def stored(result: Imported, start: int = 1) -> list[tuple[int, StoredEvent]]:
    """The events as the log would hold them (what the decider would append for a new plan)."""
    return [
        (
            start + i,
            StoredEvent(
                id=o.id,
                source="plan-import",
                type=type(o.event).__name__,
                subject="s",
                time=NOW,
                recordedtime=NOW,
                correlationid=o.id,
                causationid=o.id,
                data=o.event,
            ),
        )
        for i, o in enumerate(result.events)
    ]


# -- the parser ---------------------------------------------------------------------------------
def test_the_parser_reads_the_fields_the_mapping_needs():
    plan = mspdi.parse(FIXTURE.read_bytes())
    assert plan.name == "Apollo" and plan.minutes_per_day == 480
    assert plan.field_id("milestone KIND") == 188743731
    tasks = {t.uid: t for t in plan.tasks}
    assert len(tasks) == 13
    assert tasks[1].summary and tasks[1].outline_number == "1"
    assert tasks[4].milestone and tasks[4].actual_finish == dt.datetime(2026, 10, 14, 10)
    assert not tasks[9].milestone and tasks[9].duration_minutes == 0  # a milestone by duration
    assert tasks[2].duration_minutes == 40 * 60
    (ss,) = tasks[9].links
    assert (ss.predecessor_uid, ss.type, ss.lag_tenths, ss.lag_format) == (8, mspdi.SS, -9600, 7)
    assert [(b.number, b.finish) for b in tasks[12].baselines] == [
        (0, dt.datetime(2027, 2, 5, 17)),
        (1, dt.datetime(2027, 1, 29, 17)),
    ]
    assert tasks[8].extended == {188743731: "technical"}


# -- the mapping ----------------------------------------------------------------------------------
def test_a_new_plan_maps_to_phases_milestones_tasks_dependencies_baselines_and_achievements():
    result = imported()
    assert isinstance(result.events[0].event, ProjectCreated)
    assert result.events[0].event.name == "Apollo"
    planned = {m.milestone_id: m for m in of(result, MilestonePlanned)}
    assert {k: (m.name, m.kind, m.due, m.phase) for k, m in planned.items()} == {
        "uid-4": ("Design approved", "event", D(2026, 10, 13), "Design"),  # no kind: event
        "uid-8": ("Feature complete", "technical", D(2027, 1, 15), "Build"),
        "uid-9": ("Security review", "time", D(2027, 1, 20), "Build"),  # zero duration; "Time"
        "uid-12": ("Launch", "time", D(2027, 2, 5), "Launch"),
    }
    tasks = {(t.milestone_id, t.task_id): (t.title, t.start, t.due) for t in of(result, TaskAdded)}
    assert tasks == {
        # Review leads to Design approved, Sketches to Review: both its tasks, transitively
        ("uid-4", "uid-3"): ("Review", D(2026, 10, 12), D(2026, 10, 13)),
        ("uid-4", "uid-2"): ("Sketches", D(2026, 10, 5), D(2026, 10, 9)),
        ("uid-8", "uid-6"): ("Backend", D(2027, 1, 4), D(2027, 1, 15)),
        ("uid-8", "uid-7"): ("Frontend", D(2027, 1, 8), D(2027, 1, 14)),
        ("uid-12", "uid-11"): ("Marketing", D(2027, 1, 22), D(2027, 2, 4)),
    }
    deps = {(d.milestone_id, d.depends_on): d.lag_days for d in of(result, DependencyAdded)}
    assert deps == {
        # through Backend: 0 + 10 working days (PT80H at 480 min/day) + 0 = 10 wd x 7/5 = 14
        ("uid-8", "uid-4"): 14,
        # SS with LinkLag -9600: -960 min = -2 wd x 7/5 = -2.8 -> -3 (a lead), as FS
        ("uid-9", "uid-8"): -3,
        # LinkLag 24000 in d: 2400 min = 5 wd x 7/5 = 7
        ("uid-12", "uid-8"): 7,
        # through Marketing: 1 elapsed day (14400 in ed = 1440 min) + 10 wd x 7/5 = 1 + 14
        ("uid-12", "uid-9"): 15,
    }
    baselines = {b.name: b.planned for b in of(result, BaselineSet)}
    assert baselines == {
        "Baseline": {
            "uid-4": D(2026, 10, 13),
            "uid-8": D(2027, 1, 15),
            "uid-9": D(2027, 1, 20),
            "uid-12": D(2027, 2, 5),
        },
        "Baseline 1": {"uid-4": D(2026, 10, 9), "uid-8": D(2027, 1, 8), "uid-12": D(2027, 1, 29)},
    }
    (done,) = of(result, MilestoneAchieved)
    assert done.milestone_id == "uid-4"
    assert done.achieved_at == dt.datetime(2026, 10, 14, 10, tzinfo=dt.UTC)  # taken as UTC
    assert result.warnings == [
        "uid-9 after uid-8: an SS, FF or SF link on the way is taken as finish-to-start, "
        "lag -3 days"
    ]
    assert result.removed == []
    # the order the deciders need: project, milestones (tasks after theirs), links, baselines
    kinds = [type(o.event).__name__ for o in result.events]
    assert kinds.index("DependencyAdded") > max(
        i for i, k in enumerate(kinds) if k in ("MilestonePlanned", "TaskAdded")
    )
    assert kinds[-1] == "MilestoneAchieved"


def test_ids_are_valid_and_derive_from_the_file_not_the_clock():
    first, again = imported(), imported()
    assert [o.id for o in first.events] == [o.id for o in again.events]
    assert len({o.id for o in first.events}) == len(first.events)
    for o in first.events:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", o.id)
        for field in ("milestone_id", "task_id", "depends_on"):
            value = getattr(o.event, field, None)
            assert value is None or re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value)
    assert first.events[0].id == event_id(P, "", "project", "created")


def test_lags_round_half_away_from_zero():
    assert [calendar_days(x) for x in (2.5, -2.5, 1.4, -1.4, 0.0, 14.0000001)] == [
        3,
        -3,
        1,
        -1,
        0,
        14,
    ]


def test_the_same_file_again_sends_nothing():
    first = imported()
    now_state = current.from_events(stored(first))
    assert now_state.exists and now_state.baselines == {"Baseline", "Baseline 1"}
    assert now_state.milestones["uid-4"].closed
    assert imported(now_state=now_state).events == []


def test_a_moved_finish_is_one_reschedule_and_moving_it_back_is_another():
    first = imported()
    log = stored(first)
    moved = fixture(
        **{
            "<Finish>2027-01-20T17:00:00</Finish><Duration>PT0H0M0S</Duration>": (
                "<Finish>2027-01-27T17:00:00</Finish><Duration>PT0H0M0S</Duration>"
            )
        }
    )
    second = imported(moved, current.from_events(log))
    assert [o.event for o in second.events] == [
        MilestoneRescheduled(
            project_id=P, milestone_id="uid-9", new_due=D(2027, 1, 27), reason="plan import"
        )
    ]
    log += stored(second, start=len(log) + 1)
    assert imported(moved, current.from_events(log)).events == []
    back = imported(None, current.from_events(log))  # the original file: back to 2027-01-20
    assert [type(o.event).__name__ for o in back.events] == ["MilestoneRescheduled"]
    assert back.events[0].event.new_due == D(2027, 1, 20)
    log += stored(back, start=len(log) + 1)
    again = imported(moved, current.from_events(log))  # and forward again: a new id
    assert [type(o.event).__name__ for o in again.events] == ["MilestoneRescheduled"]
    ids = {second.events[0].id, back.events[0].id, again.events[0].id}
    assert len(ids) == 3


def test_a_changed_lag_is_sent_again_and_a_closed_milestone_is_left_alone():
    log = stored(imported())
    changed = fixture(
        **{
            "<LinkLag>24000</LinkLag>": "<LinkLag>48000</LinkLag>",  # 10 wd: 14 calendar days
            "<Finish>2026-10-13T17:00:00</Finish><Duration>PT0H0M0S</Duration>": (
                "<Finish>2026-10-20T17:00:00</Finish><Duration>PT0H0M0S</Duration>"
            ),
        }
    )
    result = imported(changed, current.from_events(log))
    assert [o.event for o in result.events] == [
        DependencyAdded(project_id=P, milestone_id="uid-12", depends_on="uid-8", lag_days=14)
    ]
    assert result.warnings[0] == (
        "milestone uid-4 is closed: its Finish 2026-10-20 is not imported"
    )


def test_missing_milestones_are_listed_and_cancelled_only_when_asked():
    log = stored(imported())
    text = FIXTURE.read_text()
    start = text.index("    <Task><UID>9</UID>")
    end = text.index("    <Task><UID>10</UID>")
    without = (text[:start] + text[end:]).replace(
        "<PredecessorUID>9</PredecessorUID>", "<PredecessorUID>8</PredecessorUID>"
    )
    result = imported(without.encode(), current.from_events(log))
    assert result.removed == ["uid-9"]
    assert not of(result, MilestoneCancelled)
    cancelled = imported(without.encode(), current.from_events(log), cancel_removed=True)
    assert of(cancelled, MilestoneCancelled) == [
        MilestoneCancelled(
            project_id=P, milestone_id="uid-9", reason="removed from the plan (plan import)"
        )
    ]


def test_a_file_this_service_exported_keeps_its_ids():
    data = fixture(
        **{
            "<Alias>Milestone kind</Alias>\n    </ExtendedAttribute>": (
                "<Alias>Milestone kind</Alias>\n    </ExtendedAttribute>\n"
                "    <ExtendedAttribute><FieldID>188743734</FieldID><FieldName>Text2</FieldName>"
                "<Alias>Milestones id</Alias></ExtendedAttribute>"
            ),
            "<ExtendedAttribute><FieldID>188743731</FieldID><Value>time</Value>": (
                "<ExtendedAttribute><FieldID>188743734</FieldID><Value>launch</Value>"
                "</ExtendedAttribute><ExtendedAttribute><FieldID>188743731</FieldID>"
                "<Value>time</Value>"
            ),
        }
    )
    result = imported(data)
    assert {m.milestone_id for m in of(result, MilestonePlanned)} == {
        "uid-4",
        "uid-8",
        "uid-9",
        "launch",
    }
    assert {(d.milestone_id, d.depends_on) for d in of(result, DependencyAdded)} >= {
        ("launch", "uid-8"),
        ("launch", "uid-9"),
    }


def test_the_kind_comes_from_a_configurable_field():
    data = fixture(**{"<Alias>Milestone kind</Alias>": "<Alias>Type of gate</Alias>"})
    assert {m.kind for m in of(imported(data), MilestonePlanned)} == {"event"}
    kinds = {m.kind for m in of(imported(data, kind_alias="type of gate"), MilestonePlanned)}
    assert kinds == {"event", "technical", "time"}


# -- bad files: one clear error each --------------------------------------------------------------
BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Project xmlns="http://schemas.microsoft.com/project"><Name>&lol3;</Name></Project>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Project xmlns="http://schemas.microsoft.com/project"><Name>&x;</Name></Project>"""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"MPX,Microsoft Project for Windows,4.0", "not XML"),
        (b"<html><body>plan</body></html>", "not an MS Project XML (MSPDI) file"),
        (b'<Project xmlns="urn:other"/>', "not an MS Project XML (MSPDI) file"),
        (BOMB, "declares a DTD"),
        (EXTERNAL, "declares a DTD"),
        (b" " * (mspdi.MAX_PLAN_BYTES + 1), "plans up to 20,971,520 bytes"),
        (
            fixture(**{"<UID>3</UID><ID>3</ID>": "<UID>2</UID><ID>3</ID>"}),
            "task UID 2 appears twice",
        ),
        (
            fixture(**{"<MinutesPerDay>480</MinutesPerDay>": "<MinutesPerDay>x</MinutesPerDay>"}),
            "MinutesPerDay is 'x'",
        ),
    ],
)
def test_a_bad_file_is_refused_by_the_parser(data: bytes, message: str):
    with pytest.raises(PlanError, match=re.escape(message)):
        mspdi.parse(data)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (  # Sketches after Design approved, which follows Review, which follows Sketches
            {
                "<Duration>PT40H0M0S</Duration></Task>\n    <Task><UID>3</UID>": (
                    "<Duration>PT40H0M0S</Duration><PredecessorLink><PredecessorUID>4"
                    "</PredecessorUID></PredecessorLink></Task>\n    <Task><UID>3</UID>"
                )
            },
            "the links form a cycle: task UIDs",
        ),
        (
            {
                "<Finish>2027-02-05T17:00:00</Finish><Duration>PT0H0M0S": (
                    "<Finish>2250-02-05T17:00:00</Finish><Duration>PT0H0M0S"
                )
            },
            "Finish 2250-02-05 is out of range: dates from 1970-01-01 to 2199-12-31",
        ),
        (
            {
                "<LinkLag>24000</LinkLag><LagFormat>7</LagFormat>": (
                    "<LinkLag>500</LinkLag><LagFormat>19</LagFormat>"
                )
            },
            "the lag after task UID 8 is a percentage",
        ),
        (
            {"<LinkLag>24000</LinkLag>": "<LinkLag>9600000</LinkLag>"},  # 2000 wd: 2800 days
            "",
        ),
        (
            {"<LinkLag>24000</LinkLag>": "<LinkLag>-9600000</LinkLag>"},
            "milestone uid-12 follows uid-8 with a lag of -2800 days: lags from -365 to 3650",
        ),
        (
            {"<PredecessorUID>11</PredecessorUID>": "<PredecessorUID>99</PredecessorUID>"},
            "follows task UID 99, which the file does not have",
        ),
        (
            {
                "<ActualFinish>2026-10-14T10:00:00</ActualFinish>": (
                    "<ActualFinish>2027-10-14T10:00:00</ActualFinish>"
                )
            },
            "milestone uid-4: ActualFinish 2027-10-14T10:00:00+00:00 is in the future",
        ),
    ],
)
def test_a_bad_plan_is_refused_by_the_mapping(replace: dict[str, str], message: str):
    data = fixture(**replace)
    if not message:  # within the bounds: accepted
        imported(data)
        return
    with pytest.raises(PlanError, match=re.escape(message)):
        imported(data)


# -- BaselineSet: a plan's own dates (the contract change) ----------------------------------------
def test_a_baseline_with_planned_dates_keeps_them_for_planned_milestones():
    created = ProjectCreated(project_id=P, name="Apollo")
    a = MilestonePlanned(project_id=P, milestone_id="a", name="A", kind="event", due=D(2027, 1, 1))
    proj = project_decider.evolve(project_decider.initial_state(P), created)
    ms = milestone_decider.evolve(milestone_decider.initial_state(P, "a"), a)
    own = BaselineSet(project_id=P, name="plan", planned={"a": D(2026, 12, 24)})
    assert project_decider.decide(own, proj, {"a": ms}) == [own]
    filled = project_decider.decide(BaselineSet(project_id=P, name="now"), proj, {"a": ms})
    assert filled == [BaselineSet(project_id=P, name="now", planned={"a": D(2027, 1, 1)})]
    unknown = BaselineSet(project_id=P, name="x", planned={"a": D(2027, 1, 1), "zz": D(2027, 1, 1)})
    with pytest.raises(Rejected, match="names milestones not planned in this project: zz"):
        project_decider.decide(unknown, proj, {"a": ms})


def test_the_stored_events_decode():
    for o in imported().events:  # what the intake would decode: the contract's own structs
        assert msgspec.json.decode(msgspec.json.encode(o.event), type=type(o.event)) == o.event


def test_cloudevents_go_in_batches_under_both_limits():
    from services.plans.cloudevents import batches, cloudevent

    events = [cloudevent(o, "planning", NOW) for o in imported().events]
    assert events[1]["type"] == "MilestonePlanned" and "type" not in events[1]["data"]
    assert events[1]["time"] == "2026-12-06T12:00:00Z"
    by_count = batches(events, 5, 64 * 1024)
    assert [n for n, _ in by_count] == [5, 5, 5, 2]
    by_size = batches(events, 100, 1024 + 700)  # 700 bytes a batch, after the margin
    assert sum(n for n, _ in by_size) == 17 and all(len(b) <= 700 or n == 1 for n, b in by_size)
    assert [e["id"] for _, b in by_count for e in msgspec.json.decode(b)] == [
        e["id"] for e in events
    ]


def test_a_chain_longer_than_the_recursion_limit_is_walked():
    n = 3000  # milestone 1 -> 3000 one-hour tasks -> milestone n + 2
    rows = [
        "<Task><UID>1</UID><Name>Start</Name><Milestone>1</Milestone>"
        "<Finish>2027-01-01T17:00:00</Finish><Duration>PT0H0M0S</Duration></Task>"
    ]
    for uid in range(2, n + 2):
        rows.append(
            f"<Task><UID>{uid}</UID><Name>t{uid}</Name><Start>2027-01-01T08:00:00</Start>"
            f"<Finish>2027-01-01T09:00:00</Finish><Duration>PT1H0M0S</Duration>"
            f"<PredecessorLink><PredecessorUID>{uid - 1}</PredecessorUID></PredecessorLink></Task>"
        )
    rows.append(
        f"<Task><UID>{n + 2}</UID><Name>End</Name><Milestone>1</Milestone>"
        f"<Finish>2028-06-01T17:00:00</Finish><Duration>PT0H0M0S</Duration>"
        f"<PredecessorLink><PredecessorUID>{n + 1}</PredecessorUID></PredecessorLink></Task>"
    )
    xml = (
        '<Project xmlns="http://schemas.microsoft.com/project"><Tasks>'
        + "".join(rows)
        + "</Tasks></Project>"
    ).encode()
    result = imported(xml)
    (dep,) = of(result, DependencyAdded)
    assert (dep.milestone_id, dep.depends_on) == (f"uid-{n + 2}", "uid-1")
    assert dep.lag_days == 525  # 3000 h = 375 working days x 7/5
    assert len(of(result, TaskAdded)) == n
