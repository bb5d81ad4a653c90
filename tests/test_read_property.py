"""Property: whatever the intake accepts can be projected and shown (issue 13).

Random events of every type a publisher may send, with values anywhere inside the intake's
bounds (dates and times 1970-01-01 to 2199-12-31 at any offset, text of any printable Unicode,
orders across PostgreSQL's ``integer``, lags from -365 to 3,650 days), go through the intake over
NATS; once the read models have passed the last accepted position, every query route, dashboard
page and NATS query of that project answers without a 5xx, and no projection parked anything.
One running stack, a fresh project per example.
"""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.conftest import caught_up, cloudevent, http_client, request
from tests.read_robustness_support import sweep

MILESTONES = ("m0", "m1", "m2", "m3")
TASKS = ("t0", "t1", "t2")
FIRST, LAST = dt.date(1970, 1, 1), dt.date(2199, 12, 31)

DAYS = st.dates(min_value=FIRST, max_value=LAST)
OFFSETS = st.sampled_from(
    [dt.UTC, *(dt.timezone(dt.timedelta(hours=h)) for h in (-14, -9, -3, 2, 5, 14))]
)
# a day inside the bounds, so that the time is inside them whatever its offset
TIMES = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2199, 12, 30), timezones=OFFSETS
)
# printable text: no control characters (Cc) or lone surrogates (Cs), what the intake accepts
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != ""
)
ORDERS = st.integers(-(2**31), 2**31 - 1)
LAGS = st.integers(-365, 3650)
MID = st.sampled_from(MILESTONES)
TID = st.sampled_from(TASKS)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | strategy


def message(project: str) -> st.SearchStrategy:
    """One message a publisher may send, as (type, data, time)."""

    def ms(**kw):
        return st.fixed_dictionaries({"project_id": st.just(project), **kw})

    def drop_none(d: dict) -> dict:
        return {k: v for k, v in d.items() if v is not None}

    def day(s):
        return s.map(lambda d: d.isoformat())

    def when(s):
        return s.map(lambda t: t.isoformat())

    kinds = {
        "TaskAdded": ms(
            milestone_id=MID,
            task_id=TID,
            title=TEXT,
            start=maybe(day(DAYS)),
            due=maybe(day(DAYS)),
            check=maybe(TEXT),
        ),
        "TaskCompleted": ms(
            milestone_id=MID,
            task_id=TID,
            result=maybe(st.sampled_from(["passed", "failed"])),
        ),
        "TaskReopened": ms(milestone_id=MID, task_id=TID, reason=maybe(TEXT)),
        "MilestoneRescheduled": ms(milestone_id=MID, new_due=day(DAYS), reason=TEXT),
        "MilestoneAchieved": ms(milestone_id=MID, evidence=maybe(TEXT)),
        "MilestoneCancelled": ms(milestone_id=MID, reason=TEXT),
        "DeadlineReached": ms(milestone_id=MID, due=day(DAYS)),
        "DependencyAdded": ms(milestone_id=MID, depends_on=MID, lag_days=LAGS),
        "DependencyRemoved": ms(milestone_id=MID, depends_on=MID),
        "BaselineSet": ms(name=TEXT),
        "StakeholderSubscribed": ms(
            stakeholder=TEXT,
            url=st.just("https://hooks.example/milestones"),
            milestone_id=maybe(MID),
        ),
        "StakeholderUnsubscribed": ms(
            stakeholder=TEXT,
            url=st.just("https://hooks.example/milestones"),
            milestone_id=maybe(MID),
        ),
        "StatusReported": ms(
            health=st.sampled_from(["on_track", "at_risk", "late", "missed", "achieved"]),
            note=TEXT,
            milestone_id=maybe(MID),
        ),
    }
    return st.one_of(
        *(
            st.tuples(st.just(name), data.map(drop_none), TIMES, st.integers(0, 3650))
            for name, data in kinds.items()
        )
    )


def plan(project: str) -> st.SearchStrategy:
    """The project and its milestones first (so that most messages after them are accepted)."""
    created = st.fixed_dictionaries(
        {
            "project_id": st.just(project),
            "name": TEXT,
            "goals": st.lists(TEXT, max_size=2),
            "dependency_policy": st.sampled_from(["notify", "shift"]),
        }
    )
    milestones = st.tuples(
        *(
            st.fixed_dictionaries(
                {
                    "project_id": st.just(project),
                    "milestone_id": st.just(mid),
                    "name": TEXT,
                    "kind": st.sampled_from(["time", "event", "technical"]),
                    "due": DAYS.map(lambda d: d.isoformat()),
                    "order": ORDERS,
                    "phase": maybe(TEXT),
                    "success_criteria": maybe(TEXT),
                }
            ).map(lambda d: {k: v for k, v in d.items() if v is not None})
            for mid in MILESTONES
        )
    )
    tasks = st.lists(
        st.fixed_dictionaries(
            {
                "project_id": st.just(project),
                "milestone_id": MID,
                "task_id": TID,
                "title": TEXT,
                "start": maybe(DAYS.map(lambda d: d.isoformat())),
                "due": maybe(DAYS.map(lambda d: d.isoformat())),
            }
        ).map(lambda d: {k: v for k, v in d.items() if v is not None}),
        max_size=8,
    )
    return st.tuples(
        created, milestones, tasks, st.lists(message(project), min_size=5, max_size=25)
    )


def stamped(type_: str, data: dict, time: dt.datetime, days_before: int) -> dict:
    """A CloudEvent at ``time``; a completion or achievement happened ``days_before`` it (never
    after the message's own time, and never before 1970)."""
    happened = max(time - dt.timedelta(days=days_before), dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    if type_ == "TaskCompleted":
        data = {**data, "completed_at": happened.isoformat()}
    if type_ == "MilestoneAchieved":
        data = {**data, "achieved_at": happened.isoformat()}
    return cloudevent(type_, data, time=time.isoformat(), actor="someone")


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_whatever_the_intake_accepts_every_query_and_page_shows(
    system, nc, db_url, authenticator, data
):
    project = f"prop-{uuid.uuid4().hex[:12]}"
    created, milestones, tasks, messages = data.draw(plan(project))
    time = data.draw(TIMES).isoformat()
    sent = [cloudevent("ProjectCreated", created, time=time)]
    sent += [cloudevent("MilestonePlanned", m, time=time) for m in milestones]
    sent += [cloudevent("TaskAdded", t, time=time) for t in tasks]
    sent += [stamped(*m) for m in messages]
    last, accepted = 0, 0
    for ce in sent:
        reply = await request(nc, ce)
        assert reply.accepted or reply.error.code not in ("internal", "unavailable"), (ce, reply)
        if reply.accepted and reply.events:
            accepted += 1
            last = max(last, reply.events[-1].position)
    assert accepted >= 1  # the project at least
    await caught_up(db_url, last)
    async with http_client(system, authenticator, timeout=60) as (client, app):
        result = await sweep(client, app, nc, project, MILESTONES, deep=False)
        assert not result.failures, "\n".join(result.failures)
        assert result.status(f"/ui/projects/{project}") == 200
        assert result.status(f"/projects/{project}/trend") == 200
        parked = (await client.get("/parked")).json()
        assert parked == [], parked
